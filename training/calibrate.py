"""Shift each label's prior so a jointly trained model answers every dataset in its own words.

Joint training mixes datasets whose label sets differ, so the model's prior for a label depends
on how often its datasets were drawn, and labels that no dataset holds together (fear and
anxious, surprise and embarrassed) are never weighed against each other on the same face. The
result is a model whose FER faces drift to AIHub-only answers, or the reverse. A per-label
offset on the logits (the classic prior-shift correction) moves that boundary without
touching what the network sees: it is searched on the validation faces of every dataset at once,
to raise the mean of their accuracies, and then folded into the output layer's bias, so the
served model is the same network with ten different numbers.

The validation sets then serve both to pick the epoch and to set these offsets: ten numbers,
fitted on about 8,700 faces, cannot memorise much, but the held-out sets outside the project
are the real test, and the model card says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.joint import Dataset, score_dataset

log = logging.getLogger(__name__)

# Offsets tried for each label in turn (natural-log units): e^-2 to e^+1 times its prior.
STEPS = np.round(np.arange(-2.0, 1.01, 0.25), 2)


def view_probabilities(classifier, data: Dataset) -> np.ndarray:
    """(2, N, labels): the classifier's answers on each val face and on its mirror image."""
    faces = data.val.images.astype(np.float32) / 255.0
    return np.stack(
        [classifier.predict(v, batch_size=256, verbose=0) for v in (faces, faces[:, :, ::-1])]
    )


def shifted(views: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The flip-averaged answers after adding `offsets` to every view's logits."""
    logits = np.log(np.clip(views, 1e-7, 1.0)) + offsets
    logits -= logits.max(axis=-1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return probabilities.mean(axis=0)


def mean_accuracy(
    views: Sequence[np.ndarray], datasets: Sequence[Dataset], offsets: np.ndarray
) -> float:
    scores = [_accuracy(shifted(v, offsets), d) for v, d in zip(views, datasets, strict=True)]
    return float(np.mean(scores))


def _accuracy(probabilities: np.ndarray, data: Dataset) -> float:
    return score_dataset(probabilities, data.val)["accuracy"]


def search_offsets(
    views: Sequence[np.ndarray], datasets: Sequence[Dataset], labels: Sequence[str], rounds: int = 3
) -> np.ndarray:
    """Coordinate ascent over the labels' offsets, a grid step at a time."""
    offsets = np.zeros(len(labels))
    best = mean_accuracy(views, datasets, offsets)
    for _ in range(rounds):
        improved = False
        for i in range(len(labels)):
            for step in STEPS:
                trial = offsets.copy()
                trial[i] = step
                score = mean_accuracy(views, datasets, trial)
                if score > best + 1e-6:
                    best, offsets, improved = score, trial, True
        if not improved:
            break
    log.info("Offsets %s: mean val accuracy %.4f", dict(zip(labels, offsets, strict=True)), best)
    return offsets


def fold_into_bias(classifier, offsets: np.ndarray) -> None:
    """Add the offsets to the output layer's bias: softmax(Wx + b + offsets)."""
    layer = classifier.get_layer("emotion")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + offsets.astype(bias.dtype)])


def calibrate(bundle: Path, data_dirs: Sequence[Path], out_dir: Path) -> dict[str, Any]:
    """Search the offsets for a train-joint bundle, and write the shifted model's bundle."""
    from ml.models import BUNDLE_FILE, BundleSpec
    from training.bundle import MODEL_FILE, ModelCard, write_bundle
    from training.compact import classifier_from, with_flip_averaging
    from training.joint import JointRecipe, keras_predict, load_dataset, score_all

    spec = BundleSpec.from_json(json.loads((bundle / BUNDLE_FILE).read_text()))
    classifier = classifier_from(bundle / MODEL_FILE)
    recipe = JointRecipe(input_size=spec.input_size[0], color=spec.color)
    datasets = [load_dataset(d, recipe) for d in data_dirs]
    views = [view_probabilities(classifier, d) for d in datasets]
    before = {d.name: _accuracy(shifted(v, 0.0), d) for v, d in zip(views, datasets, strict=True)}
    offsets = search_offsets(views, datasets, spec.labels)
    fold_into_bias(classifier, offsets)
    metrics = score_all(keras_predict(classifier), datasets)
    metrics["label_offsets"] = {k: float(v) for k, v in zip(spec.labels, offsets, strict=True)}
    metrics["accuracy_before_offsets"] = {k: round(v, 4) for k, v in before.items()}
    card = ModelCard(
        data=f"{bundle}, with per-label offsets searched on: " + ", ".join(map(str, data_dirs)),
        split="each dataset's val/ folder (the same faces that selected the epoch)",
        metrics=metrics,
    )
    write_bundle(out_dir, with_flip_averaging(classifier), spec, card)
    return metrics
