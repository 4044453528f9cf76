"""Cheap experiments on a frozen network's features: label schemes, the seed's head, splits.

Training a network end to end costs hours on this project's CPU; a classifier on the frozen
pooled features of the shipped model costs seconds to minutes. That is enough to compare
*choices* that do not depend on the trunk: how to train over datasets whose label sets differ,
the seed's own recipe (its dense head, Adam 1e-4, batch 16, best on validation loss) with our
compact backbone in place of VGG-Face, and how much a random split flatters that recipe
compared with a split by person. The ranking such probes give is a guide, not the final number;
docs/TRAINING.md reports both.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.bundle import MODEL_FILE
from training.data import FaceArrays
from training.joint import (
    UNION_LABELS,
    JointRecipe,
    flip_averaged,
    joint_targets,
    load_dataset,
    restricted_crossentropy,
    score_dataset,
)

log = logging.getLogger(__name__)

# 0 = each face's loss over its own dataset's labels, 1 = a plain softmax over the union.
UNION_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0)


def feature_extractor(bundle: Path):
    """predict(faces, batch) -> the compact classifier's pooled features (before dropout)."""
    import keras

    from training.compact import classifier_from

    classifier = classifier_from(bundle / MODEL_FILE)
    trunk = keras.Model(classifier.input, classifier.get_layer("gap").output)
    return lambda faces, batch: trunk.predict(faces, batch_size=batch, verbose=0)


def fit_softmax(
    features: np.ndarray, targets: np.ndarray, union_weight: float = 0.0, *, epochs: int = 40
):
    """A softmax layer over the union, trained with the joint loss (targets carry masks)."""
    import keras

    keras.utils.set_random_seed(0)
    head = keras.Sequential(
        [keras.Input((features.shape[1],)), keras.layers.Dense(len(UNION_LABELS), "softmax")]
    )
    head.compile(keras.optimizers.Adam(1e-3), loss=restricted_crossentropy(union_weight))
    head.fit(features, targets, batch_size=256, epochs=epochs, verbose=0, shuffle=True)
    return lambda x: head.predict(x, batch_size=1024, verbose=0)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
    return [(x - mean) / std for x in (train, *others)]


def compare_label_schemes(
    features: dict[str, tuple[np.ndarray, np.ndarray]], datasets: Sequence[Any]
) -> dict[str, Any]:
    """Restricted, blended and union softmax, and one head per dataset, on every val set."""
    train_x = np.concatenate([features[d.name][0] for d in datasets])
    scaled = _standardise(train_x, *(features[d.name][1] for d in datasets))
    train_x, vals = scaled[0], dict(zip([d.name for d in datasets], scaled[1:], strict=True))
    results: dict[str, Any] = {}
    targets = np.concatenate([joint_targets(d.train, 0.0) for d in datasets])
    for weight in UNION_WEIGHTS:
        predict = fit_softmax(train_x, targets, weight)
        results[f"union_weight {weight}"] = {
            d.name: _brief(score_dataset(predict(vals[d.name]), d.val)) for d in datasets
        }
    results["per_dataset_heads"] = _per_dataset_heads(train_x, vals, datasets)
    return results


def _per_dataset_heads(train_x, vals, datasets) -> dict[str, Any]:
    """One softmax per dataset over its own labels; served, their answers must be merged.

    A photo does not say which dataset it resembles, so the served answer averages every head's
    probabilities on the union (a label only one dataset has gets that head's mass alone).
    """
    starts = np.cumsum([0, *(len(d.train.labels) for d in datasets)])
    heads = []
    for d, a, b in zip(datasets, starts[:-1], starts[1:], strict=True):
        targets = joint_targets(d.train, 0.0)
        heads.append(fit_softmax(train_x[a:b], targets))
    scores = {}
    for d in datasets:
        answers = [h(vals[d.name]) * _mask(o) for h, o in zip(heads, datasets, strict=True)]
        merged = np.mean(answers, axis=0)
        scores[d.name] = _brief(score_dataset(merged, d.val))
    return scores


def _mask(d) -> np.ndarray:
    return np.array([name in d.labels for name in UNION_LABELS], dtype=np.float32)


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "foreign_share": report["foreign_answers"]["share"],
        "recall": {k: v["recall"] for k, v in report["per_class"].items()},
    }


def seed_recipe(train_x, train: FaceArrays, val_x, val: FaceArrays, *, max_epochs: int = 60):
    """The seed's head (1024-512-512, L1/L2) on features: Adam 1e-4, batch 16, best val loss.

    The seed ran up to 300 epochs with patience 30; on frozen features the validation loss
    bottoms out far sooner, so 60 epochs with patience 10 keeps the run to minutes here.
    """
    import keras

    from training.vggface_train import build_head

    keras.utils.set_random_seed(0)
    classes = len(train.label_names)
    head = build_head(train_x.shape[1:], classes)
    head.compile(keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
    stop = keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)
    head.fit(
        train_x,
        np.eye(classes)[train.labels],
        validation_data=(val_x, np.eye(classes)[val.labels]),
        batch_size=16,
        epochs=max_epochs,
        callbacks=[stop],
        verbose=0,
    )
    answers = head.predict(val_x, batch_size=1024, verbose=0)
    report = score_dataset(answers, val, val.label_names)
    return {**_brief(report), "epochs_run": len(head.history.history["loss"])}


def split_inflation(extract, person_dir: Path, random_dir: Path, cache: Path) -> dict[str, Any]:
    """The seed's recipe trained and scored on a random split and on a split by person."""
    results = {}
    for label, root in (("random split", random_dir), ("person split", person_dir)):
        d = load_dataset(root, JointRecipe())
        train_x, val_x = cached_features(extract, d, cache)
        train_x, val_x = _standardise(train_x, val_x)
        results[label] = seed_recipe(train_x, d.train, val_x, d.val)
    return results


def cached_features(extract, d, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """A dataset's train and val features, kept in `cache` (keyed by its files)."""
    files = "\n".join((*d.train.files, "--", *d.val.files)).encode()
    path = cache / f"{d.name}-{hashlib.sha256(files).hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as saved:
            return saved["train"], saved["val"]
    train_x, val_x = (flip_averaged(extract, part.images) for part in (d.train, d.val))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, train=train_x, val=val_x)
    return train_x, val_x


def run_probes(
    bundle: Path, data_dirs: Sequence[Path], person_dir: Path, random_dir: Path, cache: Path
) -> dict[str, Any]:
    """Every experiment on the frozen features of `bundle` (a compact model)."""
    extract = feature_extractor(bundle)
    cache = cache / bundle.name  # features belong to the model that made them
    datasets = [load_dataset(d, JointRecipe()) for d in data_dirs]
    features = {d.name: cached_features(extract, d, cache) for d in datasets}
    return {
        "label_schemes": compare_label_schemes(features, datasets),
        "seed_recipe_split_inflation": split_inflation(extract, person_dir, random_dir, cache),
    }
