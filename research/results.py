"""Results across runs: read run folders, aggregate over seeds, write ``research/RESULTS.md``.

A run folder counts when it holds ``config.json`` and a ``metrics.json`` with trained
models. Runs are grouped by profile and by the settings that shape results: a run whose
settings differ from the profile as it is now (an earlier version, a ``--set``) is
reported as its own variant, ``<profile> (<6 hex digits>)``, never averaged in.
Unseen-image evaluations are read from ``<run>/unseen/<model>.json`` (written by
``cxr evaluate --output``). Nothing here is typed by hand: every number comes from a run.
Settings renamed or removed since a run are read under today's names
(:func:`research.run_settings.current_names`).

Run folders are large (checkpoints, predictions) and live outside git, so
:func:`archive_runs` first copies each finished run's small record (``config.json``,
``metrics.json``, ``unseen/*.json``) into a committed folder, and the report is written
from there: a report survives the machine its runs were trained on.

    .venv/bin/python -m research.results --runs-dir runs/results/runs
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import typer  # noqa: E402

from cxr.core.config import MODEL_NAMES, RANDOM_INIT  # noqa: E402
from cxr.train.paper import DISPLAY_NAMES, TABLE2, TABLE6  # noqa: E402
from research.run_settings import (  # noqa: E402
    current_fingerprint,
    current_names,
    profile_config,
    result_settings,
    settings_fingerprint,
)


@dataclass
class RunRecord:
    """What one finished training run left in its folder."""

    run_id: str
    dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    unseen: dict[str, dict[str, Any]] = field(default_factory=dict)
    variant: str = ""  # fingerprint when the settings differ from the profile's current ones

    @property
    def profile(self) -> str:
        """The profile, with the variant's fingerprint when it is not the current one."""
        name = str(self.config.get("profile", "?"))
        return f"{name} ({self.variant})" if self.variant else name

    @property
    def seed(self) -> int:
        return int(self.config["train"]["seed"])

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        return self.metrics.get("models", {})


def load_runs(runs_dir: Path) -> list[RunRecord]:
    """Every finished run under ``runs_dir``, oldest first."""
    records = []
    for folder in sorted(Path(runs_dir).iterdir()):
        config, metrics = folder / "config.json", folder / "metrics.json"
        if not (config.is_file() and metrics.is_file()):
            continue
        data = json.loads(metrics.read_text())
        if not data.get("models"):
            continue
        unseen = {
            path.stem: json.loads(path.read_text())
            for path in sorted((folder / "unseen").glob("*.json"))
        }
        config = current_names(json.loads(config.read_text()))
        record = RunRecord(folder.name, folder, config, data, unseen)
        fingerprint = settings_fingerprint(record.config)
        if fingerprint != current_fingerprint(str(record.config.get("profile"))):
            record.variant = fingerprint
        records.append(record)
    return records


RECORD_FILES = ("config.json", "metrics.json")


def archive_runs(runs_dir: Path, records_dir: Path) -> list[str]:
    """Copy the record of every finished run under ``runs_dir`` into ``records_dir``
    (replacing an older copy of the same run); return the run ids copied."""
    copied = []
    for record in load_runs(runs_dir):
        target = Path(records_dir) / record.run_id
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            shutil.copyfile(record.dir / name, target / name)
        for path in sorted((record.dir / "unseen").glob("*.json")):
            (target / "unseen").mkdir(exist_ok=True)
            shutil.copyfile(path, target / "unseen" / path.name)
        copied.append(record.run_id)
    return copied


def variants_section(runs: list[RunRecord]) -> list[str]:
    """What each variant changed against its profile as it is now."""
    lines = []
    for label in _profiles(runs):
        record = next(r for r in runs if r.profile == label)
        now = profile_config(str(record.config.get("profile")))
        if not record.variant or now is None:
            continue
        then, current = result_settings(record.config), result_settings(now)
        changes = [
            f"`{key}` {json.dumps(then.get(key))} (now {json.dumps(current.get(key))})"
            for key in sorted(set(then) | set(current))
            if then.get(key) != current.get(key) and not key.endswith("backbone_weights")
        ]
        lines.append(f"- `{label}`: " + (", ".join(changes) or "same settings"))
    return lines


def mean_sd(values: list[float]) -> str:
    """'mean ± sd' of the values, the value alone when there is one, '-' when none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _random_init(config: dict[str, Any]) -> bool:
    """Whether the run's ResNet50 started from random weights (see ``resolve_weights``)."""
    return str(config["model"]["backbone_weights"]).lower() in RANDOM_INIT


def _init(config: dict[str, Any]) -> str:
    """How the ResNet50s of a run were initialised."""
    weights = config["model"]["backbone_weights"]
    start = "random" if _random_init(config) else weights
    if config["train"].get("hybrid_backbone_from_baseline"):
        return f"{start}; hybrid from the baseline's backbone"
    return start


def _ci(metrics: dict[str, Any]) -> str:
    low, high = metrics["accuracy_ci95"]
    return f"{metrics['accuracy']:.4f} ({low:.3f}-{high:.3f})"


def _auc(metrics: dict[str, Any]) -> str:
    return f"{metrics['roc_auc']:.4f}" if metrics.get("roc_auc") is not None else "-"


def _cutoff(model: dict[str, Any]) -> str:
    """The P(COVID) cut-off a model was tested with, and where it came from (older runs
    recorded it as ``decision_threshold``)."""
    chosen = (model.get("cutoff") or model.get("decision_threshold") or {}).get(
        "chosen_on", "config"
    )
    return f"{model['test']['threshold']:.3f} ({chosen})"


def _confusion(c: dict[str, int]) -> str:
    return f"{c['tp']} {c['fn']} / {c['fp']} {c['tn']}"


def _profiles(runs: list[RunRecord]) -> list[str]:
    return sorted({r.profile for r in runs}, key=lambda p: (p != "paper", p))


def runs_table(runs: list[RunRecord]) -> list[str]:
    """One row per run: settings that differ between profiles, time, gate outcome."""
    lines = [
        "| run | profile | seed | images train/val/test | image size | ResNet50 init "
        "| wall time (min) | per model (min) | gate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        sizes = r.metrics.get("split_sizes", {})
        split = "/".join(str(sizes.get(s, "?")) for s in ("train", "val", "test"))
        per_model = ", ".join(
            f"{DISPLAY_NAMES[n]} {m['train_seconds'] / 60:.1f}" for n, m in r.models.items()
        )
        wall = r.metrics.get("wall_seconds")
        gate = r.metrics.get("gate", {})
        verdict = "passed" if gate.get("passed") else "rejected" if gate else "-"
        lines.append(
            f"| `{r.run_id}` | {r.profile} | {r.seed} | {split} "
            f"| {r.config['preprocess']['image_size']} | {_init(r.config)} "
            f"| {wall / 60:.1f} | {per_model} | {verdict} |"
            if wall is not None
            else f"| `{r.run_id}` | {r.profile} | {r.seed} | {split} | - | - | - | {per_model} "
            f"| {verdict} |"
        )
    return lines


def table2(runs: list[RunRecord]) -> list[str]:
    """Paper Table 2 beside the best-epoch numbers, mean ± sd over seeds."""
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    lines = [
        "| model | source | seeds | train loss | train acc | val loss | val acc | best epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in MODEL_NAMES:
        paper = TABLE2[name]
        lines.append(
            f"| {DISPLAY_NAMES[name]} | paper | 1 | "
            + " | ".join(f"{paper[k]:.4f}" for k in keys)
            + " | - |"
        )
        for profile in _profiles(runs):
            chosen = [r.models[name] for r in runs if r.profile == profile and name in r.models]
            if not chosen:
                continue
            cells = [mean_sd([m["best_epoch_metrics"][k] for m in chosen]) for k in keys]
            epochs = ", ".join(str(m["best_epoch"]) for m in chosen)
            lines.append(
                f"| {DISPLAY_NAMES[name]} | {profile} | {len(chosen)} | "
                + " | ".join(cells)
                + f" | {epochs} |"
            )
    return lines


def table6(runs: list[RunRecord]) -> list[str]:
    """Paper Tables 3-6 beside each run's test metrics and their mean ± sd."""
    lines = [
        "| model | source | run | n | accuracy (95% CI) | precision | recall | F1 | ROC AUC "
        "| TP FN / FP TN | cut-off |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODEL_NAMES:
        p = TABLE6[name]
        lines.append(
            f"| {DISPLAY_NAMES[name]} | paper | - | 100 | {p['accuracy']:.2f} "
            f"| {p['precision']:.2f} | {p['recall']:.2f} | {p['f1']:.2f} | - "
            f"| {_confusion(p['confusion'])} | - |"
        )
        for profile in _profiles(runs):
            chosen = [r for r in runs if r.profile == profile and name in r.models]
            for r in chosen:
                t = r.models[name]["test"]
                lines.append(
                    f"| {DISPLAY_NAMES[name]} | {profile} | seed {r.seed} | {t['n']} | {_ci(t)} "
                    f"| {t['precision']:.4f} | {t['recall']:.4f} | {t['f1']:.4f} | {_auc(t)} "
                    f"| {_confusion(t['confusion'])} | {_cutoff(r.models[name])} |"
                )
            if chosen:
                tests = [r.models[name]["test"] for r in chosen]
                cells = [
                    mean_sd([t[k] for t in tests])
                    for k in ("accuracy", "precision", "recall", "f1")
                ]
                lines.append(
                    f"| {DISPLAY_NAMES[name]} | {profile} "
                    f"| **mean ± sd, {_seeds(len(chosen))}** | - | "
                    + " | ".join(cells)
                    + " | - | - | - |"
                )
    return lines


def unseen_table(runs: list[RunRecord]) -> list[str]:
    """Accuracy on the images set aside before any run, per run and mean ± sd."""
    lines = [
        "| model | profile | run | model evaluated | n | accuracy (95% CI) | F1 | ROC AUC "
        "| TP FN / FP TN | cut-off |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODEL_NAMES:
        for profile in _profiles(runs):
            chosen = [r for r in runs if r.profile == profile and name in r.unseen]
            for r in chosen:
                u = r.unseen[name]
                which = (
                    "checkpoint" if u["model"].endswith(".keras") else f"packaged `{u['model']}`"
                )
                lines.append(
                    f"| {DISPLAY_NAMES[name]} | {profile} | seed {r.seed} | {which} | {u['n']} "
                    f"| {_ci(u)} "
                    f"| {u['f1']:.4f} | {_auc(u)} | {_confusion(u['confusion'])} "
                    f"| {u['threshold']:.3f} |"
                )
            if chosen:
                accuracy = mean_sd([r.unseen[name]["accuracy"] for r in chosen])
                lines.append(
                    f"| {DISPLAY_NAMES[name]} | {profile} | **mean ± sd, {_seeds(len(chosen))}** "
                    f"| - | - | {accuracy} | - | - | - | - |"
                )
    return lines


def plot_curves(runs: list[RunRecord], profile: str, path: Path) -> Path:
    """Training and validation accuracy per epoch, one panel per model, one line per seed."""
    chosen = [r for r in runs if r.profile == profile]
    fig, axes = plt.subplots(1, len(MODEL_NAMES), figsize=(5 * len(MODEL_NAMES), 3.6))
    for ax, name in zip(axes, MODEL_NAMES, strict=True):
        for i, r in enumerate(chosen):
            history = r.models.get(name, {}).get("history")
            if not history:
                continue
            epochs = range(1, len(history["accuracy"]) + 1)
            color = f"C{i}"
            ax.plot(epochs, history["accuracy"], color=color, ls="--", lw=1)
            ax.plot(epochs, history["val_accuracy"], color=color, lw=1.5, label=f"seed {r.seed}")
        ax.set_title(f"{DISPLAY_NAMES[name]} ({profile})")
        ax.set_xlabel("epoch")
        ax.set_ylim(0.4, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (dashed: train, solid: validation)")
    labelled = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if labelled:
        labelled[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def findings(runs: list[RunRecord]) -> list[str]:
    """Plain statements of where each profile meets or falls short of the paper, and why."""
    from cxr.train.evaluation import wilson_interval  # imports Keras: only when reporting

    low, high = wilson_interval(95, 100)
    lines = [
        f"- The paper's 0.95 comes from one run on 100 test images; its own 95% interval "
        f"is {low:.3f}-{high:.3f}, and it reports no spread over seeds.",
    ]
    if "paper" not in _profiles(runs):
        lines.append(
            "- No run of the `paper` profile is in these run folders: one takes 85-112 min on "
            "a 2-core CPU. The one made is in `docs/REAL_DATA_RUN.md` (random init, test "
            "accuracy 0.51, rejected by the gate)."
        )
    explained: set[str] = set()
    for profile in _profiles(runs):
        chosen = [r for r in runs if r.profile == profile]
        for name in MODEL_NAMES:
            tests = [r.models[name]["test"]["accuracy"] for r in chosen if name in r.models]
            unseen = [r.unseen[name]["accuracy"] for r in chosen if name in r.unseen]
            if not tests:
                continue
            paper = float(TABLE6[name]["accuracy"])
            mean = statistics.mean(tests)
            seen = ""
            if unseen:
                seen_mean = statistics.mean(unseen)
                verdict = _verdict(seen_mean, paper)
                seen = f"; on the unseen images {seen_mean:.4f}, which {verdict} it"
            lines.append(
                f"- `{profile}` {DISPLAY_NAMES[name]}: mean test accuracy {mean:.4f} over "
                f"{_seeds(len(tests))}, which {_verdict(mean, paper)} the paper's {paper:.2f}"
                f"{seen}."
            )
        base = str(chosen[0].config.get("profile"))
        if base not in explained:  # once per profile, for all its variants
            explained.add(base)
            lines += _profile_notes(base, profile_config(base) or chosen[0].config)
    return lines


def _verdict(accuracy: float, paper: float) -> str:
    return "matches or beats" if accuracy >= paper else "falls short of"


def _profile_notes(profile: str, config: dict[str, Any]) -> list[str]:
    """Why a profile differs from the paper's setting."""
    lines = []
    if _random_init(config):
        lines.append(
            f"- `{profile}` starts ResNet50 from random weights: ImageNet weights cannot be "
            "downloaded on this machine, while the paper very likely fine-tuned them."
        )
    if config["train"].get("hybrid_backbone_from_baseline"):
        lines.append(
            f"- In `{profile}` the hybrid's ResNet50 starts from the ResNet50 baseline trained "
            "just before it in the same run (same training split): the hybrid has had more "
            "training than the baseline it is compared with, as it would with ImageNet "
            "weights in the paper."
        )
    if config.get("decision", {}).get("cutoff_from_validation"):
        lines.append(
            f"- `{profile}` chooses each model's P(COVID) cut-off on the validation split "
            "(the paper uses 0.5); the test split and the unseen images play no part in it."
        )
    size = config["preprocess"]["image_size"]
    if size != 224:
        lines.append(
            f"- `{profile}` trains at {size}x{size} px instead of the paper's 224x224 "
            "(fewer pixels, less detail, much less compute)."
        )
    return lines


def results_markdown(runs: list[RunRecord], figures_dir: Path, doc_dir: Path) -> str:
    """The whole ``RESULTS.md``: runs, Tables 2-6, unseen images, curves, findings."""
    profiles = _profiles(runs)
    lines = [
        "# Results: this project beside the paper",
        "",
        "Generated by `python -m research.results` from the run records in `results/runs/`",
        "beside this file (each run's config, metrics and unseen-image metrics, copied from",
        "its run folder) — do not edit by hand.",
        "Every accuracy carries its 95% Wilson interval; `mean ± sd` is over seeds.",
        "",
        "## Runs",
        "",
        *runs_table(runs),
        "",
        *(
            ["Variants (settings that differ from the profile as it is now):", "", *variants, ""]
            if (variants := variants_section(runs))
            else []
        ),
        "## Table 2: best epoch (the checkpoint kept), train and validation",
        "",
        *table2(runs),
        "",
        "## Tables 3-6: held-out test split, COVID positive",
        "",
        *table6(runs),
        "",
        "## Real images no run ever saw",
        "",
        "Set aside with `cxr holdout` before any training (near-copies kept on one side), "
        "evaluated with `cxr evaluate --model <run>/models/<model>.keras`.",
        "",
        *unseen_table(runs),
        "",
        "## Training curves",
        "",
    ]
    for profile in profiles:
        slug = profile.replace(" (", "_").rstrip(")")
        png = plot_curves(runs, profile, figures_dir / f"curves_{slug}.png")
        lines += [f"![{profile} curves]({png.relative_to(doc_dir)})", ""]
    lines += ["## Where this project stands against the paper, and why", "", *findings(runs), ""]
    return "\n".join(lines)


def write_results(runs_dir: Path, out: Path) -> Path:
    """Read the runs under ``runs_dir`` and write the report to ``out`` (figures beside)."""
    runs = load_runs(runs_dir) if Path(runs_dir).is_dir() else []
    if not runs:
        raise FileNotFoundError(f"no finished runs (config.json + metrics.json) in {runs_dir}")
    out = Path(out)
    figures = out.parent / "results"
    for stale in figures.glob("curves_*.png"):  # profiles or variants no longer reported
        stale.unlink()
    out.write_text(results_markdown(runs, figures, out.parent))
    return out


app = typer.Typer(add_completion=False)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def main(
    runs_dir: Annotated[Path, typer.Option(help="folder of run folders to archive")] = Path(
        "runs/results/runs"
    ),
    out: Annotated[Path, typer.Option(help="Markdown file; figures go beside it")] = Path(
        "research/RESULTS.md"
    ),
    records: Annotated[
        Path | None,
        typer.Option(help="run records (config, metrics, unseen) to report [OUT's results/runs]"),
    ] = None,
) -> None:
    """Copy the record of every finished run in RUNS_DIR into RECORDS, then write the
    paper comparison over all records (mean ± sd over seeds)."""
    records = records or out.parent / "results" / "runs"
    if runs_dir.is_dir():
        copied = archive_runs(runs_dir, records)
        typer.echo(f"archived {len(copied)} run record(s) from {runs_dir} into {records}")
    elif not records.is_dir():
        _fail(f"neither {runs_dir} nor {records} is a folder")
    else:
        typer.echo(f"{runs_dir} not found: reporting the records in {records} only")
    try:
        path = write_results(records, out)
    except FileNotFoundError as error:
        _fail(str(error))
    typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
