"""Train and evaluate the flow's three models on a GPU host (Keras on JAX or TensorFlow;
no Prefect, no gate, no packaging).

1. ``bundle`` re-encodes the pool and unseen images that ``cxr holdout`` wrote as
   grayscale PNGs at the training size, so a copy for another host is small and
   ``to_model_input`` does not resize a second time;
2. ``train`` runs the flow's own steps on the bundle (``ingest``, ``split_dataset``,
   ``split_arrays``, ``train_model`` in ``training_order``, ``evaluate_model`` for the
   cut-off and the test split) and evaluates each model on the unseen images too, into
   one JSON report with the devices and wall times. With Tuberculosis films in the
   bundle (``bundle --tuberculosis``) it also fits each model's out-of-distribution check
   as the flow does (``fit_detector``) and reports the share of test, unseen and
   Tuberculosis images it refuses, with the Tuberculosis AUROC against the unseen ones
   and its 95% bootstrap interval.

Run from the repository root (it imports ``cxr``, installed or not):

    .venv/bin/cxr holdout --data-dir DATA --out runs/holdout --per-class 200
    .venv/bin/python -m research.gpu_run bundle --pool runs/holdout/pool \\
        --unseen runs/holdout/unseen --out runs/bundle --size 224 \\
        --tuberculosis TB_Chest_Radiography_Database/Tuberculosis
    KERAS_BACKEND=jax python -m research.gpu_run train --bundle runs/bundle \\
        --set preprocess.image_size=224 --out runs/gpu_run.json
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)
TUBERCULOSIS = "tuberculosis"  # the bundle's folder of out-of-distribution films


def _reencode(paths: list[Path], target: Path, size: int) -> None:
    """Each image as a size x size grayscale PNG in the new folder ``target``."""
    from PIL import Image

    from cxr.core.preprocessing import decode_grayscale

    target.mkdir(parents=True, exist_ok=False)
    for path in paths:
        gray, _ = decode_grayscale(path.read_bytes())
        image = Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR)
        image.save(target / f"{path.stem}.png", optimize=True)


@app.command()
def bundle(
    pool: Annotated[Path, typer.Option(help="the pool/ folder `cxr holdout` wrote")],
    unseen: Annotated[Path, typer.Option(help="the unseen/ folder `cxr holdout` wrote")],
    out: Annotated[Path, typer.Option(help="new folder for the re-encoded images")],
    size: Annotated[int, typer.Option(help="side in pixels; train at this size")] = 224,
    tuberculosis: Annotated[
        Path | None, typer.Option(help="folder of Tuberculosis films: OOD traffic, never trained")
    ] = None,
) -> None:
    """Re-encode every pool and unseen image (and the Tuberculosis films) as a size x size
    grayscale PNG (decoded as training decodes it)."""
    from cxr.core.config import load_settings
    from cxr.data.ingestion import list_class_images, resolve_dataset_root

    if out.exists():
        typer.echo(f"error: {out} exists; choose a new folder", err=True)
        raise typer.Exit(2)
    classes = load_settings(environ={}).data.classes
    folders = {}  # target folder: its source images
    for part, folder in (("pool", pool), ("unseen", unseen)):
        root = resolve_dataset_root(folder)
        folders.update({out / part / label: list_class_images(root, label) for label in classes})
    if tuberculosis is not None:
        folders[out / TUBERCULOSIS] = sorted(tuberculosis.glob("*.png"))
    for target, paths in folders.items():
        _reencode(paths, target, size)
    written = sum(len(paths) for paths in folders.values())
    megabytes = sum(p.stat().st_size for p in out.rglob("*.png")) / 2**20
    typer.echo(f"wrote {written} images, {megabytes:.1f} MiB, to {out}")


def ood_report(
    model: object, arrays: dict, unseen_x: object, tb_x: object, keep_share: float
) -> dict:
    """The model's OOD check fitted as the flow fits it (training split, threshold on the
    validation split), and what it refuses of the test, unseen and Tuberculosis images."""
    from cxr.train.ood import auroc_interval, fit_detector, ood_scores, refusal_summary

    detector = fit_detector(model, arrays["train"].x, arrays["val"].x, keep_share)
    scores = {
        "test": ood_scores(model, detector, arrays["test"].x),
        "unseen": ood_scores(model, detector, unseen_x),
        "tuberculosis": ood_scores(model, detector, tb_x),
    }
    auroc, low, high = auroc_interval(scores["tuberculosis"], scores["unseen"], seed=0)
    return {
        "layers": detector.layers,
        "threshold": detector.threshold,
        **{key: refusal_summary(detector, value) for key, value in scores.items()},
        "auroc_tuberculosis_vs_unseen": auroc,
        "auroc_ci95": [low, high],
    }


@app.command()
def train(
    bundle: Annotated[Path, typer.Option(help="folder `bundle` wrote")],
    out: Annotated[Path, typer.Option(help="JSON report to write")],
    profile: Annotated[str, typer.Option()] = "recipe",
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value, repeatable")] = None,
    checkpoints: Annotated[
        Path | None, typer.Option(help="folder for the checkpoints [a temporary one]")
    ] = None,
) -> None:
    """Train the three models on bundle/pool; report test and unseen accuracy and times."""
    from cxr.core.calibration import calibrate
    from cxr.core.config import ConfigError, load_settings, parse_assignments
    from cxr.data.dataset import load_arrays, split_arrays, split_dataset
    from cxr.data.ingestion import ingest
    from cxr.train.devices import compute_devices
    from cxr.train.evaluation import compute_metrics, evaluate_model, predict_probabilities
    from cxr.train.training import train_model, training_order

    try:
        overrides = parse_assignments(set_ or [])
        settings = load_settings(profile, overrides=overrides, environ={})
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    started = time.perf_counter()
    images = ingest(bundle / "pool", settings.data, settings.train.seed)
    split = split_dataset(images, settings.preprocess, settings.train.seed)
    arrays = split_arrays(split, settings.preprocess)
    everything = settings.data.model_copy(update={"samples_per_class": None})
    unseen_images = ingest(bundle / "unseen", everything, 0)
    unseen_images = unseen_images.loc[unseen_images["readable"]]
    size = settings.preprocess.image_size
    unseen = load_arrays(
        unseen_images["path"].tolist(), unseen_images["label_index"].astype(int).tolist(), size
    )
    report = {
        "profile": profile,
        "overrides": overrides,
        "devices": compute_devices(),
        "split_sizes": {name: len(a.y) for name, a in arrays.items()},
        "unseen_n": len(unseen.y),
        "models": {},
    }
    tb_files = sorted((bundle / TUBERCULOSIS).glob("*.png"))
    tb = load_arrays([str(f) for f in tb_files], [0] * len(tb_files), size).x if tb_files else None
    report["tuberculosis_n"] = len(tb_files)
    workdir = checkpoints or Path(tempfile.mkdtemp(prefix="cxr-gpu-run-"))
    trained = {}
    for name in training_order(settings.train):
        model = train_model(
            name, arrays["train"], arrays["val"], settings, workdir, trained.get("resnet50")
        )
        trained[name] = model
        evaluated = evaluate_model(model.model, arrays["val"], arrays["test"], settings.decision)
        cutoff = evaluated.metrics["threshold"]
        unseen_probabilities = calibrate(
            predict_probabilities(model.model, unseen.x),
            float(evaluated.calibration["temperature"]),
        )  # the cut-off is on the calibrated scale
        report["models"][name] = {
            "train_seconds": round(model.seconds, 1),
            "best_epoch": model.best_epoch + 1,
            "cutoff": evaluated.cutoff,
            "test": evaluated.metrics,
            "unseen": compute_metrics(unseen.y, unseen_probabilities, cutoff),
        }
        if tb is not None:
            report["models"][name]["ood"] = ood_report(
                model.model, arrays, unseen.x, tb, settings.ood.keep_share
            )
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    typer.echo(
        json.dumps(
            {
                n: (m["test"]["accuracy"], m["unseen"]["accuracy"])
                for n, m in report["models"].items()
            }
        )
    )


if __name__ == "__main__":
    app()
