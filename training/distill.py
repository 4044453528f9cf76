"""Knowledge distillation: train one compact model towards the averaged answers of several.

An ensemble of our compact models scores about a point higher on FER2013 val than any one of
them, but costs a forward pass per member. Distillation (Hinton et al., 2015) can move much of
that gain into a single network: its targets blend the true label with the ensemble's
probabilities, which also say how ambiguous a face is ("fear, or maybe surprise"). A short
CPU fine-tune of our shipped model this way gained nothing (docs/TRAINING.md, "Distillation").

The teachers run once over the unaugmented training faces, before training. Running them on
every augmented batch would cost several times the student's own training step; the jitter
we apply is mild enough (a few degrees, a tenth of the side) for the clean face's answer to
stay a good target.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

BATCH = 256


def check_teachers(teachers: Sequence[str | Path], labels: Sequence[str]) -> None:
    """Refuse, before any data loads, a teacher that is missing or lacks one of `labels`."""
    from ml.models import resolve_model

    for teacher in teachers:
        _columns(teacher, resolve_model(teacher)[0], labels)


def _columns(teacher: str | Path, spec, labels: Sequence[str]) -> list[int]:
    """Where each of `labels` sits in the teacher's output; a label it lacks is refused."""
    missing = [label for label in labels if label not in spec.labels]
    if missing:
        raise ValueError(f"teacher {teacher} does not know the classes {', '.join(missing)}")
    return [spec.labels.index(label) for label in labels]


def teacher_probabilities(
    teachers: Sequence[str | Path], faces: np.ndarray, labels: Sequence[str]
) -> np.ndarray:
    """The teachers' mean class probabilities for uint8 `faces` (N, H, W, 1 or 3).

    Columns follow `labels`; every teacher must know all of them.
    """
    from ml.models import load_keras_model, resolve_model

    if not teachers:
        raise ValueError("distillation needs at least one teacher bundle")
    total = np.zeros((len(faces), len(labels)), dtype=np.float64)
    for teacher in teachers:
        spec, weights = resolve_model(teacher)
        columns = _columns(teacher, spec, labels)
        model = load_keras_model(spec, weights)
        total += _predict_all(spec, model, faces, f"teacher {teacher}")[:, columns]
    return (total / len(teachers)).astype(np.float32)


def _predict_all(spec, model, faces: np.ndarray, description: str) -> np.ndarray:
    """The model's answers to `faces`, preprocessed as the bot would, a batch at a time.

    A whole dataset at VGG-Face's 224x224x3 would not fit in memory at once.
    """
    from ml.models import preprocess_faces

    # Bundles take RGB crops as the bot hands them over; grey faces become grey RGB.
    rgb = np.repeat(faces, 3, axis=-1) if faces.shape[-1] == 1 else faces
    rows = [
        model.predict(preprocess_faces(spec, list(rgb[start : start + BATCH])), verbose=0)
        for start in tqdm(range(0, len(rgb), BATCH), desc=description, unit="batch", leave=False)
    ]
    return np.concatenate(rows)


def blended_targets(one_hot: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) x the true label + weight x the teachers' probabilities."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distillation weight must be within 0..1, got {weight}")
    if one_hot.shape != teacher.shape:
        raise ValueError(f"targets {one_hot.shape} and teacher {teacher.shape} do not match")
    return ((1.0 - weight) * one_hot + weight * teacher).astype(np.float32)
