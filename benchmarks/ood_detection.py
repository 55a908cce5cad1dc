"""How well the out-of-distribution check refuses what the model was not trained on.

    .venv/bin/python benchmarks/ood_detection.py                 # about 3-5 min on 2 cores
    .venv/bin/python benchmarks/ood_detection.py --per-class 300 --unseen 100 --seed 42
    .venv/bin/python benchmarks/ood_detection.py --run-dir runs/<id> --model-tag <tag>  # reuse

1. Sets ``--unseen`` COVID and Normal images of ``../shared/data`` aside (``cxr holdout``:
   whole near-copy groups, so no unseen image has a near-copy in the training pool).
2. Runs the training flow with the ``demo`` profile on ``--per-class`` images per class
   of the pool (the gate's minimum is set to 0: this measures the detector, not the
   gate), which fits each model's detector and packages the gated hybrid with its own.
   ``--run-dir`` and ``--model-tag`` reuse such a run instead (the unseen images' list is
   saved in it) and fit the detector again with today's code, on the run's training
   split and validation split: a detector can be compared in minutes.
3. Scores, through the packaged model and its detector (the path the service takes):
   the run's test split, the unseen COVID/Normal images, the Tuberculosis images (never
   used for training), and non-radiographs: scikit-image's bundled photographs, text
   pages rendered with PIL and noise images.
4. Prints each set's flag rate (95% Wilson interval) and the AUROC of the score against
   the unseen COVID/Normal images (95% bootstrap interval), the compiled path's speed
   with and without the features, and writes it all to the run's ``metrics.json``
   (``ood_benchmark``).
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cxr.environment import apply_defaults  # noqa: E402

apply_defaults()  # as the cxr command sets them

from cxr.core.inference import Predictor  # noqa: E402
from cxr.core.model_store import PackagedModel, load_any, load_model  # noqa: E402
from cxr.core.ood import verdicts  # noqa: E402
from cxr.core.preprocessing import decode_image, to_model_input  # noqa: E402
from cxr.train.evaluation import wilson_interval  # noqa: E402
from cxr.train.ood import auroc_interval  # noqa: E402

app = typer.Typer()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RELEASE = "COVID-19_Radiography_Dataset"
TARGETS = {"unseen COVID/Normal": "<= 5%", "Tuberculosis": ">= 70%", "non-radiographs": ">= 99%"}
PHOTOS = [  # scikit-image's bundled images (no download): photographs, scans, micrographs
    "astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry",
    "logo", "moon", "page", "rocket", "text", "retina", "microaneurysms", "checkerboard",
    "cell", "shepp_logan_phantom",
]  # fmt: skip


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def photographs() -> dict[str, bytes]:
    """scikit-image's bundled photographs, as PNG."""
    import skimage.data
    from skimage.util import img_as_ubyte

    found = {}
    for name in PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.dtype != np.uint8:
            image = img_as_ubyte(image.astype(np.float64) / max(1e-9, float(image.max())))
        found[f"photo:{name}"] = _png(image[..., :3] if image.ndim == 3 else image)
    return found


def text_pages(n: int, seed: int) -> dict[str, bytes]:
    """Pages of rendered text (black on white, some inverted), 512 px."""
    rng = np.random.default_rng(seed)
    words = "the patient film chest radiograph report normal opacity lung left right".split()
    font = ImageFont.load_default(size=18)
    pages = {}
    for i in range(n):
        background, ink = (255, 0) if i % 4 else (0, 255)
        page = Image.new("L", (512, 512), background)
        draw = ImageDraw.Draw(page)
        for line in range(int(rng.integers(8, 24))):
            text = " ".join(rng.choice(words, size=int(rng.integers(3, 9))))
            draw.text((20, 20 + line * 21), text, fill=ink, font=font)
        pages[f"text:{i}"] = _png(np.asarray(page))
    return pages


def noise_images(n: int, seed: int) -> dict[str, bytes]:
    """Uniform, Gaussian, salt-and-pepper and smoothed noise, 299 px."""
    rng = np.random.default_rng(seed)
    kinds = ("uniform", "gaussian", "salt_pepper", "blurred")
    images = {}
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "uniform":
            array = rng.integers(0, 256, (299, 299))
        elif kind == "gaussian":
            array = np.clip(
                rng.normal(rng.uniform(60, 200), rng.uniform(10, 60), (299, 299)), 0, 255
            )
        elif kind == "salt_pepper":
            array = np.where(rng.random((299, 299)) < 0.5, 0, 255)
        else:
            small = rng.integers(0, 256, (12, 12)).astype(np.uint8)
            array = np.asarray(Image.fromarray(small).resize((299, 299), Image.BICUBIC))
        images[f"noise:{kind}:{i}"] = _png(np.asarray(array, np.uint8))
    return images


def score(packaged: PackagedModel, images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(OOD scores, flagged) of encoded images through the packaged model's compiled
    two-output path and its detector, after the one preprocessing function."""
    detector = packaged.detector
    predictor = Predictor(packaged.model, 32, detector.layers)
    decoded = [decode_image(data) for data in images]
    x = np.stack([to_model_input(d.gray, packaged.image_size) for d in decoded])
    colour = np.array([d.colour for d in decoded])
    scores, flags = verdicts(detector, predictor.outputs(x)[1], len(x), colour)
    return scores, flags == 0.0


def compiled_speed(packaged: PackagedModel, repeats: int = 20) -> dict[str, float]:
    """Batch-1 latency and batch-32 rate of the compiled path without and with the
    features (the served path with the OOD check), and the scoring's own time."""
    size, detector = packaged.image_size, packaged.detector
    rng = np.random.default_rng(0)
    one, full = (
        rng.random((1, size, size, 3), np.float32),
        rng.random((32, size, size, 3), np.float32),
    )
    found = {}
    for name, layers in (("plain", ()), ("with_ood", detector.layers)):
        predictor = Predictor(packaged.model, 32, layers)
        predictor.warm_up(size)
        single = []
        for _ in range(repeats):
            started = time.perf_counter()
            _, features = predictor.outputs(one)
            if features is not None:
                detector.score(features)
            single.append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(repeats):
            _, features = predictor.outputs(full)
            if features is not None:
                detector.score(features)
        found[f"{name}_batch1_ms"] = round(float(np.median(single)) * 1000, 2)
        found[f"{name}_batch32_img_s"] = round(repeats * 32 / (time.perf_counter() - started), 1)
    found["batch32_rate_ratio_with_ood/plain"] = round(
        found["with_ood_batch32_img_s"] / found["plain_batch32_img_s"], 3
    )
    found["batch1_latency_ratio_with_ood/plain"] = round(
        found["with_ood_batch1_ms"] / found["plain_batch1_ms"], 3
    )
    return found


def _row(name: str, scores: np.ndarray, flagged: np.ndarray, unseen: np.ndarray, seed: int) -> dict:
    low, high = wilson_interval(int(flagged.sum()), len(flagged))
    row = {
        "set": name,
        "n": int(len(flagged)),
        "flagged": int(flagged.sum()),
        "flag_rate": round(float(flagged.mean()), 4),
        "flag_rate_ci95": [round(low, 4), round(high, 4)],
        "median_score": round(float(np.median(scores)), 2),
        "target": TARGETS.get(name, "-"),
    }
    if name not in ("test split", "unseen COVID/Normal"):
        auc, auc_low, auc_high = auroc_interval(scores, unseen, seed)
        row |= {"auroc": round(auc, 4), "auroc_ci95": [round(auc_low, 4), round(auc_high, 4)]}
    return row


def train(
    data: Path, per_class: int, unseen: int, seed: int, image_size: int | None, runs_dir: Path
) -> dict:
    """Holdout, then the training flow with the demo profile on the pool; the unseen
    images' list is saved in the run (``ood_benchmark_unseen.txt``) for ``--run-dir``."""
    from cxr.core.config import load_settings
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
            "packaging.model_name": "cxr-ood-bench",
            "runs_dir": str(runs_dir),
        }
        if image_size:
            overrides["preprocess.image_size"] = image_size
        result = training_flow(data_dir=holdout["pool"], profile="demo", overrides=overrides)
        unseen_paths = sorted(p.resolve() for p in Path(holdout["unseen"]).rglob("*.png"))
    listed = Path(result["run_dir"]) / "ood_benchmark_unseen.txt"
    listed.write_text("\n".join(map(str, unseen_paths)))
    return result


def refit(packaged: PackagedModel, run_dir: Path, data: Path) -> PackagedModel:
    """``packaged`` with its detector fitted again on the run's training split and
    thresholded on its validation split (``cxr.train.ood.fit_detector``, as the flow's
    OOD task); the gated model's test scores are rewritten with it."""
    import pandas as pd

    from cxr.core.config import load_settings
    from cxr.data.dataset import load_arrays
    from cxr.train.ood import fit_detector, ood_scores

    split = pd.read_csv(run_dir / "split.csv")
    arrays = {}
    for name in ("train", "val", "test"):
        part = split.loc[split["split"] == name]
        files = [str(data / p.split("/pool/", 1)[1]) for p in part["path"]]
        arrays[name] = load_arrays(files, part["label_index"].tolist(), packaged.image_size)
    keep = load_settings("demo", environ={}).ood.keep_share
    packaged.detector = fit_detector(packaged.model, arrays["train"].x, arrays["val"].x, keep)
    scores = ood_scores(packaged.model, packaged.detector, arrays["test"].x)
    gated = json.loads((run_dir / "config.json").read_text())["gate"]["model"]
    pd.DataFrame(
        {"path": split.loc[split["split"] == "test", "path"].to_numpy(), "ood_score": scores,
         "in_distribution": packaged.detector.in_distribution(scores)}
    ).to_csv(run_dir / "predictions" / f"{gated}_test_ood.csv", index=False)  # fmt: skip
    return packaged


@app.command()
def main(
    data: Annotated[Path, typer.Option(help="the shared data folder")] = SHARED,
    per_class: Annotated[int, typer.Option(help="training images per class")] = 300,
    unseen: Annotated[int, typer.Option(help="COVID and Normal images set aside per class")] = 100,
    seed: Annotated[int, typer.Option()] = 42,
    image_size: Annotated[int | None, typer.Option(help="default: the demo profile's")] = None,
    runs_dir: Annotated[Path, typer.Option()] = Path("runs"),
    output: Annotated[Path | None, typer.Option(help="also write the JSON here")] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="reuse this run (with --model-tag): no training")
    ] = None,
    model_tag: Annotated[str | None, typer.Option(help="the run's packaged model")] = None,
) -> None:
    """Train the demo profile on real images (or reuse a run: its detector is then fitted
    again by today's code, as the training flow's OOD task would, on the run's own
    training and validation images), then measure the OOD check; print a table."""
    import pandas as pd

    started = time.perf_counter()
    refitted = run_dir is not None and model_tag is not None
    if not refitted:
        result = train(data, per_class, unseen, seed, image_size, runs_dir)
        run_dir, model_tag = Path(result["run_dir"]), result["model_tag"]
        packaged = load_model(model_tag)
    else:
        packaged = refit(load_any(model_tag), run_dir, data)  # a tag or a run's .keras
    train_minutes = (time.perf_counter() - started) / 60
    listed = (run_dir / "ood_benchmark_unseen.txt").read_text().split("\n")
    unseen_images = [Path(p).read_bytes() for p in listed if p]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    gated = json.loads((run_dir / "config.json").read_text())["gate"]["model"]
    test = pd.read_csv(run_dir / "predictions" / f"{gated}_test_ood.csv")
    tb = sorted((data / "TB_Chest_Radiography_Database" / "Tuberculosis").glob("*.png"))
    non_radiographs = {**photographs(), **text_pages(20, seed), **noise_images(20, seed)}
    sets = {
        "unseen COVID/Normal": unseen_images,
        "Tuberculosis": [p.read_bytes() for p in tb],
        "non-radiographs": list(non_radiographs.values()),
    }
    scored = {name: score(packaged, images) for name, images in sets.items()}
    unseen_scores = scored["unseen COVID/Normal"][0]
    rows = [
        _row(
            "test split",
            test["ood_score"].to_numpy(),
            ~test["in_distribution"].to_numpy(),
            unseen_scores,
            seed,
        )  # fmt: skip
    ]
    rows += [_row(name, s, f, unseen_scores, seed) for name, (s, f) in scored.items()]
    kinds = {}
    flagged_non = scored["non-radiographs"][1]
    for name, flag in zip(non_radiographs, flagged_non, strict=True):
        kind = name.split(":")[0]
        kinds.setdefault(kind, [0, 0])
        kinds[kind][0] += int(flag)
        kinds[kind][1] += 1
    missed = [name for name, flag in zip(non_radiographs, flagged_non, strict=True) if not flag]
    report = {
        "model_tag": model_tag,
        "run_id": run_dir.name,
        "detector_refitted": refitted,
        "detector": packaged.detector.summary(),
        "per_class": per_class,
        "unseen_per_class": unseen,
        "image_size": packaged.image_size,
        "gated_test_accuracy": metrics.get("models", {})
        .get(gated, {})
        .get("test", {})
        .get("accuracy", float("nan")),
        "train_and_package_minutes": round(train_minutes, 2),
        "sets": rows,
        "non_radiographs_by_kind": {k: f"{f}/{n}" for k, (f, n) in kinds.items()},
        "non_radiographs_missed": missed,
        "speed": compiled_speed(packaged),
    }
    metrics["ood_benchmark"] = report
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
    typer.echo(f"\nmodel {report['model_tag']} (run {report['run_id']}), detector "
               f"{json.dumps(report['detector'])}")  # fmt: skip
    typer.echo(f"trained and packaged in {report['train_and_package_minutes']} min; "
               f"gated test accuracy {report['gated_test_accuracy']:.3f}\n")  # fmt: skip
    typer.echo("| set | n | flagged | flag rate (95% CI) | AUROC vs unseen (95% CI) | target |")
    typer.echo("|---|---|---|---|---|---|")
    for row in rows:
        auc = (
            f"{row['auroc']:.3f} ({row['auroc_ci95'][0]:.3f}-{row['auroc_ci95'][1]:.3f})"
            if "auroc" in row
            else "-"
        )
        low, high = row["flag_rate_ci95"]
        typer.echo(
            f"| {row['set']} | {row['n']} | {row['flagged']} | {row['flag_rate']:.3f} "
            f"({low:.3f}-{high:.3f}) | {auc} | {row['target']} |"
        )
    typer.echo(f"\nnon-radiographs flagged by kind: {report['non_radiographs_by_kind']}")
    typer.echo(f"non-radiographs not flagged: {missed}")
    typer.echo(f"compiled path speed: {json.dumps(report['speed'])}")
    if output is not None:
        output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    app()
