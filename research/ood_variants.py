"""Compare out-of-distribution scores on one trained demo model, from cached features.

    .venv/bin/python research/ood_variants.py extract --run-dir runs/<id> --model-tag <tag>
    .venv/bin/python research/ood_variants.py compare --run-dir runs/<id>
    .venv/bin/python research/ood_variants.py probe --run-dir runs/<id>

``extract`` runs the packaged model once over the run's train/val/test splits, the unseen
COVID/Normal images (``benchmarks/ood_detection.py``'s holdout, recreated by seed), the
Tuberculosis films and the non-radiographs, and caches in the run folder: each backbone
stage's feature map pooled by mean and by standard deviation, the penultimate feature,
statistics of the model input and the service's image statistics. ``compare`` fits each
candidate detector on the training split, thresholds it on validation (``ood.keep_share``)
and prints the refusal rates and AUROCs: the research behind ``cxr.core.ood``. ``probe``
trains a classifier *with* the Tuberculosis labels on the same features: how much any
detector could find in them.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cxr.environment import apply_defaults  # noqa: E402

apply_defaults()

app = typer.Typer()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RELEASE = "COVID-19_Radiography_Dataset"
STAGES = ["conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
          "conv5_block3_out"]  # fmt: skip
CACHE = "ood_variants.npz"
GRAM_STAGES = ("conv1_relu", "conv2_block3_out")
GRAM_CHANNELS = 32


def _maps_model(model):  # noqa: ANN001, ANN202
    import keras

    inputs = x = keras.Input(model.inputs[0].shape[1:], name="image")
    outs = {}
    for layer in model.layers[1:]:
        if layer.name == "resnet50":
            exposed = keras.Model(
                layer.inputs, [layer.outputs[0], *[layer.get_layer(n).output for n in STAGES]]
            )
            x, *maps = exposed(x)
            outs.update(dict(zip(STAGES, maps, strict=True)))
        else:
            if layer.name == "covid_probability":
                outs["penultimate"] = x
            x = layer(x)
    names = list(outs)
    return keras.Model(inputs, [x, *[outs[n] for n in names]]), names


@app.command()
def extract(
    run_dir: Annotated[Path, typer.Option()],
    model_tag: Annotated[str, typer.Option()],
    data: Annotated[Path, typer.Option()] = SHARED,
    unseen: int = 100,
    seed: int = 42,
) -> None:
    """Cache every candidate feature of every image set."""
    import pandas as pd

    from benchmarks.ood_detection import noise_images, photographs, text_pages
    from cxr.core.config import load_settings
    from cxr.core.image_stats import image_statistics
    from cxr.core.model_store import load_any
    from cxr.core.preprocessing import decode_image, to_model_input
    from cxr.data.holdout import make_holdout

    packaged = load_any(model_tag)
    settings = load_settings("demo", environ={})
    split = pd.read_csv(run_dir / "split.csv")
    files = {
        name: [data / p.split("/pool/", 1)[1] for p in split.loc[split["split"] == name, "path"]]
        for name in ("train", "val", "test")
    }
    listed = run_dir / "ood_variants_unseen.txt"
    if listed.exists():
        files["unseen"] = [Path(p) for p in listed.read_text().split("\n") if p]
    else:
        with tempfile.TemporaryDirectory() as folder:
            holdout = make_holdout(
                data / RELEASE, Path(folder) / "h", unseen, seed, settings.data.classes,
                settings.preprocess.near_duplicate_distance,
            )  # fmt: skip
            found = Path(holdout["unseen"]).rglob("*.png")
            files["unseen"] = sorted(p.resolve() for p in found)
        listed.write_text("\n".join(map(str, files["unseen"])))
    files["tb"] = sorted((data / "TB_Chest_Radiography_Database" / "Tuberculosis").glob("*.png"))
    blobs = {k: [Path(p).read_bytes() for p in v] for k, v in files.items()}
    non = {**photographs(), **text_pages(20, seed), **noise_images(20, seed)}
    blobs["non"] = list(non.values())
    network, names = _maps_model(packaged.model)
    cache: dict[str, np.ndarray] = {}
    bases: dict[str, np.ndarray] = {}  # each Gram stage's channel basis, from the training split
    for key, images in blobs.items():
        grays = [decode_image(b).gray for b in images]
        x = np.stack([to_model_input(g, packaged.image_size) for g in grays])
        cache[f"{key}/stats"] = np.array(
            [list(image_statistics(g).values()) for g in grays], np.float64
        )
        cache[f"{key}/input"] = x[..., 0].reshape(len(x), -1)
        s = x.shape[1]
        cache[f"{key}/input8"] = (
            x[..., 0].reshape(len(x), 8, s // 8, 8, s // 8).mean(axis=(2, 4)).reshape(len(x), -1)
        )
        outs = [network.predict_on_batch(x[i : i + 32]) for i in range(0, len(x), 32)]
        cache[f"{key}/prob"] = np.concatenate([np.asarray(o[0]).reshape(-1) for o in outs])
        for j, name in enumerate(names):
            maps = np.concatenate([np.asarray(o[j + 1], np.float32) for o in outs])
            if maps.ndim == 4:
                cache[f"{key}/{name}/mean"] = maps.mean(axis=(1, 2))
                cache[f"{key}/{name}/std"] = maps.std(axis=(1, 2))
                n, h, w, c = maps.shape
                if name in GRAM_STAGES:  # channel correlations: texture (Sastry & Oore 2020)
                    cache[f"{key}/{name}/gram"] = _gram(maps, name, bases)
                if h >= 2:  # a 2x2 grid of region means: the film's layout
                    grid = maps[:, : h // 2 * 2, : w // 2 * 2].reshape(n, 2, h // 2, 2, w // 2, c)
                    cache[f"{key}/{name}/grid"] = grid.mean(axis=(2, 4)).reshape(n, -1)
            else:
                cache[f"{key}/{name}/mean"] = maps.reshape(len(maps), -1)
        if key == "train":
            cache["train/y"] = split.loc[split["split"] == "train", "label_index"].to_numpy()
        typer.echo(f"{key}: {len(x)} images")
    np.savez(run_dir / CACHE, **cache)
    typer.echo(f"wrote {run_dir / CACHE}")


def _gram(maps: np.ndarray, name: str, bases: dict[str, np.ndarray]) -> np.ndarray:
    """Upper triangle of each image's channel Gram matrix (signed square root), over at
    most GRAM_CHANNELS principal channel directions of the training split's maps (fitted
    on the first set seen: the training split)."""
    n, h, w, c = maps.shape
    flat = maps.reshape(n, h * w, c).astype(np.float64)
    if name not in bases:
        pixels = flat.reshape(-1, c)
        pixels = pixels - pixels.mean(0)
        _, _, vt = np.linalg.svd(pixels[:: max(1, len(pixels) // 20000)], full_matrices=False)
        bases[name] = vt[: min(c, GRAM_CHANNELS)].T
    projected = flat @ bases[name]
    gram = np.einsum("npc,npd->ncd", projected, projected) / (h * w)
    upper = np.triu_indices(gram.shape[1])
    g = gram[:, upper[0], upper[1]]
    return np.sign(g) * np.sqrt(np.abs(g))


# ---- candidate scores -------------------------------------------------------------------


def _lw(train: np.ndarray):  # noqa: ANN202
    from sklearn.covariance import LedoitWolf

    fit = LedoitWolf().fit(train)
    mean, precision = fit.location_, fit.precision_

    def score(z: np.ndarray) -> np.ndarray:
        c = z - mean
        return np.sqrt(np.maximum(((c @ precision) * c).sum(1), 0))

    return score


def _lw_classes(train: np.ndarray, y: np.ndarray):  # noqa: ANN202
    """Lee et al. 2018: class means, tied (shrunk) covariance, min over classes."""
    from sklearn.covariance import LedoitWolf

    means = [train[y == c].mean(0) for c in np.unique(y)]
    centred = np.concatenate([train[y == c] - m for c, m in zip(np.unique(y), means, strict=True)])
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_

    def score(z: np.ndarray) -> np.ndarray:
        d = [((z - m) @ precision * (z - m)).sum(1) for m in means]
        return np.sqrt(np.maximum(np.min(d, axis=0), 0))

    return score


def _knn(train: np.ndarray, k: int):  # noqa: ANN202
    """Sun et al. 2022: distance to the k-th nearest L2-normalised training feature."""
    bank = train / np.linalg.norm(train, axis=1, keepdims=True).clip(1e-12)

    def score(z: np.ndarray) -> np.ndarray:
        q = z / np.linalg.norm(z, axis=1, keepdims=True).clip(1e-12)
        d = np.sqrt(np.maximum(2 - 2 * q @ bank.T, 0))
        return np.sort(d, axis=1)[:, k - 1]

    return score


def _residual(train: np.ndarray, k: int):  # noqa: ANN202
    """Norm of the part of a feature outside the training split's top-k principal
    directions (the residual of ViM, Wang et al. 2022)."""
    mean = train.mean(0)
    basis = np.linalg.svd(train - mean, full_matrices=False)[2][:k]

    def score(z: np.ndarray) -> np.ndarray:
        c = z - mean
        return np.linalg.norm(c - c @ basis.T @ basis, axis=1)

    return score


def _relative(train: np.ndarray, y: np.ndarray):  # noqa: ANN202
    """Relative Mahalanobis (Ren et al. 2021): the class-conditional distance minus the
    distance under one Gaussian of the whole training split."""
    per_class, background = _lw_classes(train, y), _lw(train)

    def score(z: np.ndarray) -> np.ndarray:
        return per_class(z) ** 2 - background(z) ** 2

    return score


def _gmm(train: np.ndarray, k: int):  # noqa: ANN202
    """Negative log-likelihood under a k-component Gaussian mixture (full covariances,
    regularised)."""
    from sklearn.mixture import GaussianMixture

    mixture = GaussianMixture(k, reg_covar=0.1, random_state=0).fit(train)
    return lambda z: -mixture.score_samples(z)


def _input_stats(flat: np.ndarray) -> np.ndarray:
    """Statistics of the model input (32x32 in [0, 1]): mean, std, 16-bin histogram,
    its entropy, share below 0.04."""
    bins = np.clip((flat * 16).astype(int), 0, 15)
    hist = np.stack([(bins == b).mean(1) for b in range(16)], 1)
    p = np.where(hist > 0, hist, 1)
    entropy = -(hist * np.log2(p)).sum(1)
    return np.c_[flat.mean(1), flat.std(1), hist, entropy, (flat < 0.04).mean(1)]


def _feature(cache: dict, key: str, spec: str) -> np.ndarray:
    parts = []
    for item in spec.split("+"):
        if item == "stats":
            s = cache[f"{key}/stats"].copy()
            s[:, 3] = np.log1p(s[:, 3])  # sharpness
            parts.append(s)
        elif item == "instats":
            parts.append(_input_stats(cache[f"{key}/input"]))
        elif item in ("input", "input8"):
            parts.append(cache[f"{key}/{item}"])
        else:
            stage, pool = item.rsplit(":", 1) if ":" in item else (item, "mean")
            if pool == "ms":
                parts += [cache[f"{key}/{stage}/mean"], cache[f"{key}/{stage}/std"]]
            else:
                parts.append(cache[f"{key}/{stage}/{pool}"])
    return np.concatenate(parts, axis=1).astype(np.float64)


def _threshold(val: np.ndarray, keep: float) -> float:
    s = np.sort(val)
    return float(s[max(0, int(np.ceil(keep * s.size)) - 1)])


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


SETS = ("val", "test", "unseen", "tb", "non")


def _scores(cache: dict, spec: str, method: str) -> dict[str, np.ndarray]:
    train = _feature(cache, "train", spec)
    scale_mean, scale_std = train.mean(0), train.std(0).clip(1e-9)
    std = method.endswith("-z")
    base = method.removesuffix("-z")

    def f(key: str) -> np.ndarray:
        z = _feature(cache, key, spec)
        return (z - scale_mean) / scale_std if std else z

    tr = f("train")
    if base == "maha":
        score = _lw(tr)
    elif base == "mahacls":
        score = _lw_classes(tr, cache["train/y"])
    elif base == "relmaha":
        score = _relative(tr, cache["train/y"])
    elif base.startswith("knn"):
        score = _knn(tr, int(base[3:]))
    elif base.startswith("resid"):
        score = _residual(tr, int(base[5:]))
    elif base.startswith("gmm"):
        score = _gmm(tr, int(base[3:]))
    else:
        raise ValueError(method)
    return {key: score(f(key)) for key in SETS}


def _evaluate(name: str, scores: dict[str, np.ndarray], keep: float) -> dict:
    t = _threshold(scores["val"], keep)
    row = {"name": name}
    for key in ("test", "unseen", "tb", "non"):
        row[key] = float((scores[key] > t).mean())
    row["auc_tb"] = _auc(scores["tb"], scores["unseen"])
    row["auc_non"] = _auc(scores["non"], scores["unseen"])
    # the TB rate at the threshold that refuses 5% of unseen (an oracle, for ranking)
    row["tb@u5"] = float((scores["tb"] > np.quantile(scores["unseen"], 0.95)).mean())
    return row


def _combined(parts: list[dict[str, np.ndarray]], keep: float) -> dict[str, np.ndarray]:
    """Max of each score divided by its own validation threshold."""
    normalised = []
    for s in parts:
        t = _threshold(s["val"], keep)
        normalised.append({k: v / t for k, v in s.items()})
    return {k: np.max([n[k] for n in normalised], axis=0) for k in SETS}


@app.command()
def compare(
    run_dir: Annotated[Path, typer.Option()],
    keep: float = 0.975,
    only: Annotated[str, typer.Option(help="comma-separated candidate names")] = "",
) -> None:
    """Print each candidate's refusal rates (threshold keeping ``keep`` of validation)."""
    with np.load(run_dir / CACHE) as loaded:
        cache = {k: loaded[k] for k in loaded.files}
    singles = {
        "maha conv2": ("conv2_block3_out", "maha"),
        "maha conv2 ms": ("conv2_block3_out:ms", "maha"),
        "mahacls conv2": ("conv2_block3_out", "mahacls"),
        "mahacls conv2 ms": ("conv2_block3_out:ms", "mahacls"),
        "knn1 conv2": ("conv2_block3_out", "knn1"),
        "knn5 conv2": ("conv2_block3_out", "knn5"),
        "knn10 conv2": ("conv2_block3_out", "knn10"),
        "knn5 conv2 ms": ("conv2_block3_out:ms", "knn5"),
        "maha conv1": ("conv1_relu", "maha"),
        "maha conv1 ms": ("conv1_relu:ms", "maha"),
        "maha conv3": ("conv3_block4_out", "maha"),
        "maha conv3 ms": ("conv3_block4_out:ms", "maha"),
        "maha conv4": ("conv4_block6_out", "maha"),
        "maha conv5": ("conv5_block3_out", "maha"),
        "maha pen": ("penultimate", "maha"),
        "knn5 conv3": ("conv3_block4_out", "knn5"),
        "knn5 pen": ("penultimate", "knn5"),
        "maha stats": ("stats", "maha"),
        "maha instats": ("instats", "maha"),
        "maha input": ("input", "maha"),
        "knn5 input": ("input", "knn5"),
        "maha conv2+stats": ("conv2_block3_out+stats", "maha-z"),
        "maha conv2+instats": ("conv2_block3_out+instats", "maha-z"),
        "maha conv2 ms+instats": ("conv2_block3_out:ms+instats", "maha-z"),
        "maha conv1+conv2 ms": ("conv1_relu:ms+conv2_block3_out:ms", "maha-z"),
        "maha conv1 grid": ("conv1_relu:grid", "maha"),
        "maha conv2 grid": ("conv2_block3_out:grid", "maha"),
        "maha conv3 grid": ("conv3_block4_out:grid", "maha"),
        "knn5 conv2 grid": ("conv2_block3_out:grid", "knn5"),
        "maha input8": ("input8", "maha"),
        "maha conv1 gram": ("conv1_relu:gram", "maha"),
        "maha conv2 gram": ("conv2_block3_out:gram", "maha"),
        "maha conv1+conv2 gram": ("conv1_relu:gram+conv2_block3_out:gram", "maha-z"),
        "knn5 conv2 gram": ("conv2_block3_out:gram", "knn5"),
        "maha input8+instats": ("input8+instats", "maha-z"),
        "maha conv2+input8+instats": ("conv2_block3_out+input8+instats", "maha-z"),
        "resid32 conv2": ("conv2_block3_out", "resid32"),
        "resid64 conv2": ("conv2_block3_out", "resid64"),
        "resid20 input": ("input", "resid20"),
        "relmaha conv2+instats": ("conv2_block3_out+instats", "relmaha-z"),
        "gmm2 conv2+instats": ("conv2_block3_out+instats", "gmm2-z"),
    }
    wanted = [n for n in only.split(",") if n] or list(singles)
    computed = {}
    rows = []
    for name in wanted:
        if name not in singles:
            continue
        computed[name] = _scores(cache, *singles[name])
        rows.append(_evaluate(name, computed[name], keep))
    combos = {
        "max(conv2, stats)": ["maha conv2", "maha stats"],
        "max(conv2, instats)": ["maha conv2", "maha instats"],
        "max(conv2 ms, instats)": ["maha conv2 ms", "maha instats"],
        "max(conv1 ms, conv2 ms)": ["maha conv1 ms", "maha conv2 ms"],
        "max(conv1 ms, conv2 ms, instats)": ["maha conv1 ms", "maha conv2 ms", "maha instats"],
        "max(conv2, conv3, pen)": ["maha conv2", "maha conv3", "maha pen"],
        "max(conv2 ms, conv3 ms, instats)": ["maha conv2 ms", "maha conv3 ms", "maha instats"],
        "max(knn5 conv2, instats)": ["knn5 conv2", "maha instats"],
        "max(conv2 ms, input)": ["maha conv2 ms", "maha input"],
        "max(conv2 grid, instats)": ["maha conv2 grid", "maha instats"],
        "max(conv2, input8)": ["maha conv2", "maha input8"],
        "max(conv2, input8, instats)": ["maha conv2", "maha input8", "maha instats"],
        "max(conv2, input8+instats)": ["maha conv2", "maha input8+instats"],
        "max(conv2 grid, input8, instats)": ["maha conv2 grid", "maha input8", "maha instats"],
        "max(conv1 grid, conv2 grid, instats)": [
            "maha conv1 grid",
            "maha conv2 grid",
            "maha instats",
        ],
        "max(conv2, conv2 grid, instats)": ["maha conv2", "maha conv2 grid", "maha instats"],
        "max(conv2, conv2 gram, instats)": ["maha conv2", "maha conv2 gram", "maha instats"],
        "max(conv2, conv1 gram, instats)": ["maha conv2", "maha conv1 gram", "maha instats"],
        "max(conv2 gram, instats)": ["maha conv2 gram", "maha instats"],
    }
    for name, members in combos.items():
        if all(m in computed for m in members):
            rows.append(_evaluate(name, _combined([computed[m] for m in members], keep), keep))
    typer.echo("| candidate | test | unseen | TB | non | AUROC TB | AUROC non | TB@unseen5% |")
    typer.echo("|---|---|---|---|---|---|---|---|")
    for r in rows:
        typer.echo(
            f"| {r['name']} | {r['test']:.3f} | {r['unseen']:.3f} | {r['tb']:.3f} | "
            f"{r['non']:.3f} | {r['auc_tb']:.3f} | {r['auc_non']:.3f} | {r['tb@u5']:.3f} |"
        )


@app.command()
def probe(
    run_dir: Annotated[Path, typer.Option()],
    spec: str = "conv2_block3_out+instats",
) -> None:
    """How far the features could separate Tuberculosis films at all: a logistic
    regression trained *with* their labels (unseen COVID/Normal against Tuberculosis,
    5-fold cross-validated), its AUROC and the share of Tuberculosis films above the score
    that refuses 5% of unseen films. A ceiling for a detector that never sees them."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with np.load(run_dir / CACHE) as loaded:
        cache = {k: loaded[k] for k in loaded.files}
    unseen, tb = _feature(cache, "unseen", spec), _feature(cache, "tb", spec)
    x, y = np.r_[unseen, tb], np.r_[np.zeros(len(unseen)), np.ones(len(tb))]
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    for c in (0.01, 0.1, 1.0):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
        p = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
        cut = np.quantile(p[y == 0], 0.95)
        typer.echo(
            f"{spec} C={c}: AUROC {_auc(p[y == 1], p[y == 0]):.3f}, Tuberculosis above the "
            f"5%-of-unseen score {(p[y == 1] > cut).mean():.3f}"
        )


if __name__ == "__main__":
    app()
