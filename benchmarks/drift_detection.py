"""How often the drift decision catches a population the model never saw, and how often
it cries wolf on the population it was trained for.

    .venv/bin/python benchmarks/drift_detection.py                  # about 10 min on 2 cores
    .venv/bin/python benchmarks/drift_detection.py --run-dir runs/<id> --model-tag <tag>

1. Sets ``--unseen`` COVID and Normal images of ``../shared/data`` aside (``cxr holdout``:
   whole near-copy groups) and trains the ``demo`` profile on ``--per-class`` images per
   class of the rest, with the OOD benchmark's settings (``benchmarks/ood_detection.py``).
   ``--run-dir`` and ``--model-tag`` reuse a run instead (its ``unseen`` list is saved).
2. Builds the monitoring reference as packaging does (``split_predictions`` +
   ``build_reference``: validation + test rows; ``--training-statistics`` adds the
   training split's rows for the image statistics alone, which packaging does not),
   scoring the validation images' OOD score through the packaged detector where the run
   did not save it.
3. Computes each image's served row ONCE (calibrated P(COVID), label, image statistics,
   OOD score: what the service logs) for the unseen COVID/Normal images and the
   Tuberculosis films.
4. Replays ``--windows`` windows seeded by ``--window-seed`` (choose settings on one
   seed, report another) of ``--window-size`` requests per condition,
   resampled with replacement: unseen COVID/Normal only (false alarms), and Tuberculosis
   at 100%, 50% and 25% of the window's traffic (the rest unseen COVID/Normal). Each
   window's per-column p-values come from Evidently's own stattests (KS, chi-square; the
   same functions its Report runs: checked on the first windows against the full
   Report) and go through the monitor's decision (``cxr.monitor.drift.decide``);
   ``--compare-share`` decides the same windows again with another
   ``monitor.ood_level_share``.
5. Prints the rate of drift verdicts per condition with its 95% Wilson interval, which
   column triggered how often, and writes it all as JSON (``--output``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cxr.environment import apply_defaults  # noqa: E402

apply_defaults()  # as the cxr command sets them

from benchmarks.ood_detection import RELEASE, SHARED  # noqa: E402
from cxr.core.calibration import calibrate  # noqa: E402
from cxr.core.config import MonitorConfig, load_settings  # noqa: E402
from cxr.core.image_stats import image_statistics  # noqa: E402
from cxr.core.inference import Predictor  # noqa: E402
from cxr.core.model_store import PackagedModel, load_model  # noqa: E402
from cxr.core.ood import OUT_OF_DISTRIBUTION, verdicts  # noqa: E402
from cxr.core.preprocessing import decode_image, to_model_input  # noqa: E402
from cxr.monitor.reference import (  # noqa: E402
    build_reference,
    monitored,
    split_predictions,
    training_statistics,
)
from cxr.train.evaluation import wilson_interval  # noqa: E402

app = typer.Typer()
TUBERCULOSIS = SHARED / "TB_Chest_Radiography_Database" / "Tuberculosis"
CONDITIONS = {  # name: share of Tuberculosis films in the window
    "unseen COVID/Normal only (false alarms)": 0.0,
    "Tuberculosis 100%": 1.0,
    "Tuberculosis 50%": 0.5,
    "Tuberculosis 25%": 0.25,
}
TARGETS = {0.0: "<= 5%", 1.0: ">= 95%", 0.5: ">= 80%", 0.25: "-"}
CHECKED_WINDOWS = 3  # per condition: direct stattests vs the full Evidently Report


def train(
    data: Path, per_class: int, unseen: int, seed: int, runs_dir: Path
) -> tuple[str, Path, list[Path]]:
    """The OOD benchmark's training: holdout, then the demo flow on the pool."""
    from cxr.data.holdout import make_holdout
    from flows.training import training_flow

    settings = load_settings("demo", environ={})
    with tempfile.TemporaryDirectory() as folder:
        holdout = make_holdout(
            data / RELEASE, Path(folder) / "holdout", unseen, seed, settings.data.classes,
            settings.preprocess.near_duplicate_distance,
        )  # fmt: skip
        overrides = {
            "data.samples_per_class": per_class,
            "train.seed": seed,
            "gate.min_score": 0.0,
            "packaging.build_bento": False,
            "packaging.model_name": "cxr-drift-bench",
            "runs_dir": str(runs_dir),
        }
        result = training_flow(data_dir=holdout["pool"], profile="demo", overrides=overrides)
        unseen_paths = sorted(p.resolve() for p in Path(holdout["unseen"]).rglob("*.png"))
    run_dir = Path(result["run_dir"])
    (run_dir / "drift_benchmark").mkdir(exist_ok=True)
    (run_dir / "drift_benchmark" / "unseen.txt").write_text("\n".join(map(str, unseen_paths)))
    return result["model_tag"], run_dir, unseen_paths


def served_rows(packaged: PackagedModel, paths: list[Path], batch: int = 64) -> pd.DataFrame:
    """What the service logs for each image: calibrated P(COVID), label, OOD score and
    flag, image statistics (the service's decode, statistics and model input)."""
    detector = packaged.detector
    predictor = Predictor(packaged.model, 32, detector.layers if detector else ())
    rows = []
    for start in range(0, len(paths), batch):
        chunk = paths[start : start + batch]
        grays = [decode_image(Path(p).read_bytes()).gray for p in chunk]
        x = np.stack([to_model_input(gray, packaged.image_size) for gray in grays])
        raw, features = predictor.outputs(x)
        scores, flags = verdicts(detector, features, len(x))
        probabilities = calibrate(raw, packaged.temperature)
        for path, gray, p, score, flag in zip(
            chunk, grays, probabilities, scores, flags, strict=True
        ):
            label = packaged.classes[int(p >= packaged.cutoff)]
            rows.append(
                {
                    "path": str(path),
                    "covid_probability": float(p),
                    "label": OUT_OF_DISTRIBUTION if flag == 0.0 else label,
                    "in_distribution": None if np.isnan(flag) else bool(flag),
                    "ood_score": float(score),
                    **image_statistics(gray),
                }
            )
    return pd.DataFrame(rows)


def reference_of(packaged: PackagedModel, run_dir: Path, data: Path) -> pd.DataFrame:
    """The reference as packaging builds it from the run's validation + test predictions;
    the validation OOD scores are computed here when the run did not save them."""
    config = json.loads((run_dir / "config.json").read_text())
    name = config["gate"]["model"]
    predictions = run_dir / "predictions"
    val_ood = predictions / f"{name}_val_ood.csv"
    if (predictions / f"{name}_test_ood.csv").exists() and not val_ood.exists():
        val = pd.read_csv(predictions / f"{name}_val.csv")
        files = [data / p.split("/pool/", 1)[1] for p in val["path"]]  # the holdout's links
        rows = served_rows(packaged, files).assign(path=val["path"])
        rows[["path", "ood_score", "in_distribution"]].to_csv(val_ood, index=False)
    images = pd.read_csv(run_dir / "ingestion" / "images.csv")
    return build_reference(
        images, split_predictions(predictions, name), packaged.classes, packaged.cutoff,
        training_statistics(images, pd.read_csv(run_dir / "split.csv")),
    )  # fmt: skip


def window(
    pools: dict[str, pd.DataFrame], share: float, size: int, rng: np.random.Generator
) -> pd.DataFrame:
    """``size`` requests resampled with replacement: ``share`` Tuberculosis films."""
    tb = int(round(share * size))
    parts = [
        pools["tb"].iloc[rng.integers(0, len(pools["tb"]), tb)],
        pools["unseen"].iloc[rng.integers(0, len(pools["unseen"]), size - tb)],
    ]
    return pd.concat(parts, ignore_index=True)


def replay(
    reference: pd.DataFrame, pools: dict[str, pd.DataFrame], config: MonitorConfig,
    windows: int, size: int, seed: int,
) -> dict[str, tuple[float, list[list[dict]], int]]:  # fmt: skip
    """Each condition's windows' per-column p-values (condition: (Tuberculosis share,
    windows, mismatches against Evidently's full Report))."""
    from cxr.monitor.drift import column_p_values, detect_drift

    config = monitored(config, reference, pools["unseen"])
    numeric = config.model_copy(update={"categorical_columns": []})
    labels = config.model_copy(update={"numeric_columns": []})
    cached: dict[tuple, list[dict]] = {}

    def p_values(current: pd.DataFrame) -> list[dict]:
        """Numeric columns' tests, then the categorical ones' permutation tests, which
        depend on the window's label counts alone once rows are ordered by label."""
        key = tuple(
            current[c].value_counts().sort_index().items() for c in labels.categorical_columns
        )
        key = tuple(tuple(k) for k in key)
        if key not in cached:
            cached[key] = column_p_values(reference, current, labels)
        return column_p_values(reference, current, numeric) + cached[key]

    replayed = {}
    for index, (name, share) in enumerate(CONDITIONS.items()):
        rng = np.random.default_rng([seed, index])
        tested, mismatches = [], 0
        for w in range(windows):
            current = window(pools, share, size, rng)
            order = config.categorical_columns
            current = current.sort_values(order, kind="stable").reset_index(drop=True)
            columns = p_values(current)
            if w < CHECKED_WINDOWS:  # the same p-values as Evidently's full Report
                with tempfile.TemporaryDirectory() as folder:
                    full = detect_drift(reference, current, config, ("", ""), Path(folder))
                got = {c["column"]: c["p_value"] for c in columns}
                for c in full.columns:
                    if not np.isclose(got[c["column"]], c["p_value"], rtol=1e-9, atol=1e-12):
                        mismatches += 1
            tested.append(columns)
        replayed[name] = (share, tested, mismatches)
    return replayed


def verdicts_of(
    replayed: dict[str, tuple[float, list[list[dict]], int]], config: MonitorConfig
) -> list[dict]:
    """Drift verdict rate per condition under ``config``'s decision, with which columns
    triggered."""
    from cxr.monitor.drift import decide

    results = []
    for name, (share, tested, mismatches) in replayed.items():
        drifted, triggers = 0, {}
        for columns in tested:
            decision = decide(columns, config)
            if decision.status == "drift":
                drifted += 1
                for column in decision.drifted_columns:
                    triggers[column] = triggers.get(column, 0) + 1
        low, high = wilson_interval(drifted, len(tested))
        results.append(
            {
                "condition": name, "tb_share": share, "windows": len(tested),
                "drift_verdicts": drifted, "rate": drifted / len(tested),
                "rate_ci95": [low, high], "target": TARGETS[share],
                "columns_drifted": dict(sorted(triggers.items(), key=lambda kv: -kv[1])),
                "report_mismatches": mismatches,
            }
        )  # fmt: skip
    return results


@app.command()
def main(
    data: Annotated[Path, typer.Option(help="the shared data folder")] = SHARED,
    per_class: Annotated[int, typer.Option(help="training images per class")] = 300,
    unseen: Annotated[int, typer.Option(help="COVID and Normal images set aside per class")] = 150,
    seed: Annotated[int, typer.Option()] = 42,
    windows: Annotated[int, typer.Option(help="windows per condition")] = 200,
    window_size: Annotated[int, typer.Option(help="requests per window")] = 60,
    runs_dir: Annotated[Path, typer.Option()] = Path("runs"),
    run_dir: Annotated[Path | None, typer.Option(help="reuse this run (with --model-tag)")] = None,
    model_tag: Annotated[str | None, typer.Option(help="the run's packaged model")] = None,
    output: Annotated[Path | None, typer.Option(help="also write the JSON here")] = None,
    window_seed: Annotated[
        int | None,
        typer.Option(help="seed of the windows (default --seed): choose on one, report another"),
    ] = None,
    training_statistics: Annotated[
        bool, typer.Option(help="the reference's image statistics include the training split's")
    ] = False,
    compare_share: Annotated[
        list[float] | None,
        typer.Option(help="also print the rates with this monitor.ood_level_share (repeat)"),
    ] = None,
) -> None:
    """Train (or reuse) a demo model on real images, then replay windows; print a table."""
    started = time.perf_counter()
    if run_dir is None or model_tag is None:
        model_tag, run_dir, unseen_paths = train(data, per_class, unseen, seed, runs_dir)
    else:
        listed = (run_dir / "drift_benchmark" / "unseen.txt").read_text().split("\n")
        unseen_paths = [Path(p) for p in listed if p]
    train_minutes = (time.perf_counter() - started) / 60
    packaged = load_model(model_tag)
    cache = run_dir / "drift_benchmark"
    if (cache / "served_unseen.csv").exists():
        pools = {k: pd.read_csv(cache / f"served_{k}.csv") for k in ("unseen", "tb")}
        reference = pd.read_csv(cache / "reference.csv")
    else:
        reference = reference_of(packaged, run_dir, data)
        pools = {
            "unseen": served_rows(packaged, unseen_paths),
            "tb": served_rows(packaged, sorted(TUBERCULOSIS.glob("*.png"))),
        }
        for key, frame in pools.items():
            frame.to_csv(cache / f"served_{key}.csv", index=False)
        reference.to_csv(cache / "reference.csv", index=False)
    scored_minutes = (time.perf_counter() - started) / 60 - train_minutes
    if not training_statistics and "part" in reference:
        reference = reference.loc[reference["part"] == "evaluation"].reset_index(drop=True)
    window_seed = seed if window_seed is None else window_seed
    config = load_settings("demo", environ={}).monitor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        replayed = replay(reference, pools, config, windows, window_size, window_seed)
    rows = verdicts_of(replayed, config)
    compared = {
        share: verdicts_of(replayed, config.model_copy(update={"ood_level_share": share}))
        for share in compare_share or []
    }
    report = {
        "model_tag": model_tag,
        "run_dir": str(run_dir),
        "reference_rows": len(reference),
        "reference_rows_with_predictions": int(reference["covid_probability"].notna().sum()),
        "window_seed": window_seed,
        "reference_rows_with_ood_score": int(reference.get("ood_score", pd.Series()).notna().sum()),
        "unseen_images": len(pools["unseen"]),
        "tuberculosis_images": len(pools["tb"]),
        "monitored": [*monitored(config, reference, pools["unseen"]).numeric_columns,
                      *config.categorical_columns],
        "family_p_value": config.family_p_value,
        "ood_level_share": config.ood_level_share,
        "window_size": window_size,
        "train_minutes": round(train_minutes, 2),
        "score_minutes": round(scored_minutes, 2),
        "replay_minutes": round(
            (time.perf_counter() - started) / 60 - train_minutes - scored_minutes, 2
        ),
        "conditions": rows,
        "compared_ood_level_shares": {str(k): v for k, v in compared.items()},
    }  # fmt: skip
    typer.echo(
        f"\nmodel {model_tag}: reference {report['reference_rows']} rows "
        f"({report['reference_rows_with_predictions']} validation + test), "
        f"{report['unseen_images']} unseen COVID/Normal and {report['tuberculosis_images']} "
        f"Tuberculosis images; monitored: {', '.join(report['monitored'])}; weighted Holm at "
        f"{config.family_p_value}, OOD score's share {config.ood_level_share}\n"
    )
    typer.echo(
        f"| window ({window_size} requests) | windows | drift verdicts | rate (95% CI) | target "
        "| columns that drifted (windows) |"
    )
    typer.echo("|---|---|---|---|---|---|")
    for row in rows:
        low, high = row["rate_ci95"]
        top = ", ".join(f"{k} {v}" for k, v in list(row["columns_drifted"].items())[:4]) or "-"
        typer.echo(
            f"| {row['condition']} | {row['windows']} | {row['drift_verdicts']} | "
            f"{row['rate']:.3f} ({low:.3f}-{high:.3f}) | {row['target']} | {top} |"
        )
    for share, compared_rows in compared.items():
        rates = " / ".join(
            f"{r['condition'].split(' (')[0]} {r['rate']:.3f}" for r in compared_rows
        )
        typer.echo(f"OOD score's share {share}: {rates}")
    mismatches = sum(row["report_mismatches"] for row in rows)
    typer.echo(f"\np-values vs Evidently's full Report: {mismatches} mismatches on "
               f"{CHECKED_WINDOWS * len(rows)} windows")  # fmt: skip
    typer.echo(f"minutes: train {report['train_minutes']}, score {report['score_minutes']}, "
               f"replay {report['replay_minutes']}")  # fmt: skip
    (cache / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    if output is not None:
        output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    app()
