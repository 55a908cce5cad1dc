"""The paper's reported results (Tables 2-6), for side-by-side comparison."""

from __future__ import annotations

# Table 2: best-epoch train/validation loss and accuracy.
TABLE2: dict[str, dict[str, float]] = {
    "resnet50": {"loss": 0.5702, "accuracy": 0.7800, "val_loss": 0.5473, "val_accuracy": 0.8600},
    "lstm": {"loss": 0.5090, "accuracy": 0.7650, "val_loss": 0.5446, "val_accuracy": 0.7400},
    "resnet50_lstm": {
        "loss": 0.2938,
        "accuracy": 0.9150,
        "val_loss": 0.3150,
        "val_accuracy": 0.9100,
    },  # fmt: skip
}

# Table 6 (and Tables 3-5: confusion matrices) on the 100-image test set.
TABLE6: dict[str, dict[str, object]] = {
    "resnet50": {
        "accuracy": 0.93, "precision": 0.92, "recall": 0.94, "f1": 0.93,
        "confusion": {"tp": 47, "fn": 3, "fp": 4, "tn": 46},
    },
    "lstm": {
        "accuracy": 0.84, "precision": 0.84, "recall": 0.84, "f1": 0.84,
        "confusion": {"tp": 42, "fn": 8, "fp": 8, "tn": 42},
    },
    "resnet50_lstm": {
        "accuracy": 0.95, "precision": 0.96, "recall": 0.94, "f1": 0.95,
        "confusion": {"tp": 47, "fn": 3, "fp": 2, "tn": 48},
    },
}  # fmt: skip

DISPLAY_NAMES = {"resnet50_lstm": "ResNet50-LSTM", "resnet50": "ResNet50", "lstm": "LSTM"}
