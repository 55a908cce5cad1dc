"""Train the flow's three models on the lent GPU machine (JAX, no TensorFlow or Prefect).

The device machine cannot see ``../shared`` and takes at most 64 MiB per call, so:

1. here: ``cxr holdout`` the real data, then ``bundle`` re-encodes pool and unseen images
   at the training size (2,400 images at 224 px: about 48 MiB) into an ignored folder;
2. there: ``train`` runs the flow's own training functions (ingest, split, the one
   preprocessing function, ``train_model`` in ``training_order``, the validation cut-off)
   and evaluates on the unseen images in the same call, writing one JSON report (a
   ResNet50 checkpoint is too big to bring back).

    .venv/bin/python scripts/device_run.py bundle --pool P --unseen U --out .device/bundle
    # wheels for keras and pydantic (docs/RECIPE_NOTES.md) into .device/whl, then a device
    # `run` with carry [".device"], starting with: python3 -m pip install -q --no-index
    # --no-deps --target /tmp/site .device/whl/*.whl && export PYTHONPATH=/tmp/site;
    KERAS_BACKEND=jax python3 scripts/device_run.py train --bundle .device/bundle \\
        --set preprocess.image_size=224 --out "$OUT/gpu_run.json"
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, not installed there

app = typer.Typer(add_completion=False)


@app.command()
def bundle(
    pool: Annotated[Path, typer.Option(help="the pool/ folder `cxr holdout` wrote")],
    unseen: Annotated[Path, typer.Option(help="the unseen/ folder `cxr holdout` wrote")],
    out: Annotated[Path, typer.Option(help="new folder for the re-encoded images")],
    size: Annotated[int, typer.Option(help="side in pixels; train at this size")] = 224,
) -> None:
    """Re-encode every pool and unseen image as a size x size grayscale PNG."""
    from PIL import Image

    from cxr.core.config import load_settings
    from cxr.data.ingestion import list_class_images, resolve_dataset_root

    if out.exists():
        typer.echo(f"error: {out} exists; choose a new folder", err=True)
        raise typer.Exit(2)
    classes = load_settings(environ={}).data.classes
    written = 0
    for part, folder in (("pool", pool), ("unseen", unseen)):
        root = resolve_dataset_root(folder)
        for label in classes:
            target = out / part / label
            target.mkdir(parents=True, exist_ok=False)
            for path in list_class_images(root, label):
                image = (
                    Image.open(path).convert("L").resize((size, size), Image.Resampling.BILINEAR)
                )
                image.save(target / f"{path.stem}.png", optimize=True)
                written += 1
    megabytes = sum(p.stat().st_size for p in out.rglob("*.png")) / 2**20
    typer.echo(f"wrote {written} images, {megabytes:.1f} MiB, to {out}")


@app.command()
def train(
    bundle: Annotated[Path, typer.Option(help="folder `bundle` wrote")],
    out: Annotated[Path, typer.Option(help="JSON report to write")],
    profile: Annotated[str, typer.Option()] = "recipe",
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value, repeatable")] = None,
) -> None:
    """Train the three models on bundle/pool; report test and unseen accuracy and times."""
    from cxr.core.config import ConfigError, load_settings
    from cxr.core.devices import compute_devices
    from cxr.data.dataset import load_arrays, split_arrays, split_dataset
    from cxr.data.ingestion import ingest
    from cxr.train.evaluation import choose_threshold, compute_metrics, predict_probabilities
    from cxr.train.training import train_model, training_order

    overrides = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep:
            typer.echo(f"error: --set needs key=value, got {item!r}", err=True)
            raise typer.Exit(2)
        overrides[key.strip()] = yaml.safe_load(value)
    try:
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
    unseen = load_arrays(
        unseen_images["path"].tolist(),
        unseen_images["label_index"].astype(int).tolist(),
        settings.preprocess.image_size,
        settings.preprocess.equalize,
    )
    report = {
        "profile": profile,
        "overrides": overrides,
        "devices": compute_devices(),
        "split_sizes": {name: len(a.y) for name, a in arrays.items()},
        "unseen_n": len(unseen.y),
        "models": {},
    }
    trained = {}
    workdir = Path(tempfile.mkdtemp(prefix="cxr-device-"))  # checkpoints stay on the machine
    for name in training_order(settings.train):
        model = train_model(
            name, arrays["train"], arrays["val"], settings, workdir, trained.get("resnet50")
        )
        trained[name] = model
        cut = settings.gate.decision_threshold
        if settings.gate.calibrate_threshold:
            cut, _ = choose_threshold(
                arrays["val"].y, predict_probabilities(model.model, arrays["val"].x)
            )
        report["models"][name] = {
            "train_seconds": round(model.seconds, 1),
            "best_epoch": model.best_epoch + 1,
            "threshold": cut,
            "test": compute_metrics(
                arrays["test"].y, predict_probabilities(model.model, arrays["test"].x), cut
            ),
            "unseen": compute_metrics(unseen.y, predict_probabilities(model.model, unseen.x), cut),
        }
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
