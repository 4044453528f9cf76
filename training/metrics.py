"""Classification metrics from labels alone (accuracy, macro-F1, per-class, confusion)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted ones."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    matrix = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), len(label_names))
    true_positive = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    precision = np.divide(
        true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0
    )
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    present = support > 0
    return {
        "n": int(matrix.sum()),
        "accuracy": float(true_positive.sum() / max(1, matrix.sum())),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion": matrix.tolist(),
    }


def plot_curves(history: dict[str, list[float]], path: Path, title: str = "") -> Path:
    """Loss and accuracy per epoch, training and validation, as a PNG (no pyplot)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4), layout="constrained")
    for axes, metric in zip(figure.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + metric, [])
            epochs = range(1, len(values) + 1)
            axes.plot(epochs, values, style, marker="o", label=(prefix or "train_") + metric)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(alpha=0.3)
        axes.legend()
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return path
