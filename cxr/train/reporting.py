"""Figures and tables of a run: training curves, confusion matrices, ROC curves,
reliability diagrams, paper comparison."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from cxr.train.calibration import expected_calibration_error, reliability_bins  # noqa: E402
from cxr.train.paper import DISPLAY_NAMES, TABLE2, TABLE6  # noqa: E402


def plot_training_curves(name: str, history: dict[str, list[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, train vs validation (the paper's Figures 3-5)."""
    epochs = range(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[metric], marker="o", label="train")
        ax.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{DISPLAY_NAMES.get(name, name)}: {metric}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(name: str, confusion: dict[str, int], path: Path) -> Path:
    """Confusion matrix laid out as in the paper (rows: actual COVID, Normal)."""
    cells = [[confusion["tp"], confusion["fn"]], [confusion["fp"], confusion["tn"]]]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cells, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(cells[i][j]), ha="center", va="center", fontsize=14)
    ax.set_xticks([0, 1], ["COVID", "Normal"])
    ax.set_yticks([0, 1], ["COVID", "Normal"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(DISPLAY_NAMES.get(name, name))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def roc_points(y_true: np.ndarray, prob: np.ndarray) -> list[dict[str, float | None]]:
    """The ROC curve of P(COVID) (COVID positive) as rows of ``threshold`` (the lowest
    P(COVID) called COVID; None for the first point, where nothing is), ``fpr`` and
    ``tpr``, from (0, 0) to (1, 1). Empty when the labels hold one class only (no curve)."""
    y_true = np.asarray(y_true).astype(int)
    if len(np.unique(y_true)) < 2:
        return []
    fpr, tpr, thresholds = roc_curve(y_true, np.asarray(prob, dtype=np.float64))
    return [
        {"threshold": float(t) if np.isfinite(t) else None, "fpr": float(f), "tpr": float(r)}
        for t, f, r in zip(thresholds, fpr, tpr, strict=True)
    ]


def plot_roc(name: str, y_true: np.ndarray, prob: np.ndarray, cutoff: float, path: Path) -> Path:
    """ROC curve of the test split (AUC in the legend) with the operating point at the
    P(COVID) ``cutoff`` the metrics use; with one class only, a note instead of a curve."""
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    points = roc_points(y_true, prob)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    if points:
        auc = roc_auc_score(y_true, prob)
        ax.plot(
            [p["fpr"] for p in points], [p["tpr"] for p in points],
            color="tab:blue", label=f"AUC {auc:.3f} (n = {len(y_true)})",
        )  # fmt: skip
        called = prob >= cutoff
        tpr = float(called[y_true == 1].mean())
        fpr = float(called[y_true == 0].mean())
        ax.plot(fpr, tpr, "o", color="tab:red", label=f"cut-off {cutoff:.3g}")
    else:
        ax.text(0.5, 0.5, "one class only: no ROC curve", ha="center", va="center")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (Normal called COVID)")
    ax.set_ylabel("true positive rate (COVID recall)")
    ax.set_title(f"{DISPLAY_NAMES.get(name, name)}: ROC (test)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_reliability(
    name: str,
    y_true: np.ndarray,
    raw: np.ndarray,
    calibrated: np.ndarray,
    calibration: dict[str, object],
    path: Path,
) -> Path:
    """Reliability diagram of the test split: observed share of COVID against mean
    P(COVID) per equal-width bin, before and after temperature scaling (ECE in the
    legend), above a histogram of the probabilities."""
    bins = int(calibration["ece_bins"])
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    curves = (
        ("before", raw, "tab:orange", "o"),
        (f"after (T = {float(calibration['temperature']):.3g})", calibrated, "tab:blue", "s"),
    )
    for label, probabilities, colour, marker in curves:
        table = [row for row in reliability_bins(y_true, probabilities, bins) if row["n"]]
        ece = expected_calibration_error(y_true, probabilities, bins)
        top.plot(
            [row["mean_probability"] for row in table],
            [row["covid_share"] for row in table],
            marker=marker, color=colour, label=f"{label}: ECE {ece:.3f}",
        )  # fmt: skip
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed share of COVID")
    top.set_title(f"{DISPLAY_NAMES.get(name, name)}: reliability (test, {bins} bins)")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    edges = np.linspace(0, 1, bins + 1)
    bottom.hist(
        [raw, calibrated], bins=edges, color=["tab:orange", "tab:blue"],
        label=["before", "after"],
    )  # fmt: skip
    bottom.set_xlabel("P(COVID)")
    bottom.set_ylabel("images")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _f(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def comparison_markdown(results: dict[str, dict[str, object]], synthetic: bool) -> str:
    """The paper's Tables 2 and 6 beside this run's numbers."""
    lines = ["# This run beside the paper", ""]
    if synthetic:
        lines += ["> **SYNTHETIC demo data**: these numbers mean nothing clinically.", ""]
    lines += [
        "## Table 2: best epoch, train and validation",
        "",
        "| model | source | train loss | train acc | val loss | val acc |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        best = result["best_epoch_metrics"]
        paper = TABLE2[name]
        label = DISPLAY_NAMES[name]
        keys = ("loss", "accuracy", "val_loss", "val_accuracy")
        lines.append(f"| {label} | paper | " + " | ".join(_f(paper[k]) for k in keys) + " |")
        lines.append(f"| {label} | this run | " + " | ".join(_f(best[k]) for k in keys) + " |")
    lines += [
        "",
        "## Table 6 (and 3-5): test set, COVID positive",
        "",
        "| model | source | n | accuracy (95% CI) | precision | recall | F1 | ROC AUC "
        "| TP FN / FP TN |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        paper, test = TABLE6[name], result["test"]
        label = DISPLAY_NAMES[name]
        pc, tc = paper["confusion"], test["confusion"]
        lines.append(
            f"| {label} | paper | 100 | {paper['accuracy']:.2f} | {paper['precision']:.2f} "
            f"| {paper['recall']:.2f} | {paper['f1']:.2f} | - "
            f"| {pc['tp']} {pc['fn']} / {pc['fp']} {pc['tn']} |"
        )
        low, high = test["accuracy_ci95"]
        auc = test["roc_auc"]
        lines.append(
            f"| {label} | this run | {test['n']} | {test['accuracy']:.4f} ({low:.3f}-{high:.3f}) "
            f"| {test['precision']:.4f} | {test['recall']:.4f} | {test['f1']:.4f} "
            f"| {_f(auc) if auc is not None else '-'} "
            f"| {tc['tp']} {tc['fn']} / {tc['fp']} {tc['tn']} |"
        )
    return "\n".join(lines) + "\n"
