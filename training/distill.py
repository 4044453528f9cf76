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

Those answers can also be saved once (`moodbot teach`) and given to `train` as a teacher in
their own right: a GPU machine reached through a small transfer then needs the answers file
(0.35 MB for FER2013's 28,709 faces), not the teachers' bundles. The file carries a
fingerprint of the faces it answered, so it is refused for any other data or order.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

BATCH = 256
ANSWERS_SUFFIX = ".npz"


class AnswersError(ValueError):
    """A saved answers file that is unreadable or belongs to other faces."""


def is_answers_file(teacher: str | Path) -> bool:
    return str(teacher).endswith(ANSWERS_SUFFIX)


def check_teachers(teachers: Sequence[str | Path], labels: Sequence[str]) -> None:
    """Refuse, before any data loads, a teacher that is missing or lacks one of `labels`."""
    from ml.models import resolve_model

    for teacher in teachers:
        if is_answers_file(teacher):
            _columns(teacher, _answers(teacher)[0], labels)
        else:
            _columns(teacher, resolve_model(teacher)[0].labels, labels)


def _columns(teacher: str | Path, known: Sequence[str], labels: Sequence[str]) -> list[int]:
    """Where each of `labels` sits in the teacher's output; a label it lacks is refused."""
    missing = [label for label in labels if label not in known]
    if missing:
        raise ValueError(f"teacher {teacher} does not know the classes {', '.join(missing)}")
    return [list(known).index(label) for label in labels]


def fingerprint(faces: np.ndarray) -> str:
    """Identifies the faces, their order and size: answers only fit the faces they were for."""
    digest = hashlib.sha256(str(faces.shape).encode())
    digest.update(np.ascontiguousarray(faces).tobytes())
    return digest.hexdigest()


def save_answers(path: Path, probabilities: np.ndarray, labels: Sequence[str], faces) -> None:
    """Write the teachers' answers for `faces` (all or nothing: a temporary file, renamed)."""
    if not is_answers_file(path):
        raise AnswersError(f"{path}: an answers file must end in {ANSWERS_SUFFIX}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as handle:
            np.savez_compressed(
                handle,
                probabilities=probabilities.astype(np.float16),
                labels=np.array(labels),
                fingerprint=np.array(fingerprint(faces)),
            )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _answers(path: str | Path) -> tuple[list[str], np.ndarray, str]:
    """Labels, probabilities and faces fingerprint of an answers file."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            return (
                [str(label) for label in saved["labels"]],
                saved["probabilities"].astype(np.float32),
                str(saved["fingerprint"]),
            )
    except FileNotFoundError as exc:
        raise AnswersError(f"teacher answers {path}: no such file") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise AnswersError(f"teacher answers {path}: not an answers file ({exc})") from exc


def saved_answers(path: str | Path, faces: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The answers saved in `path`, columns following `labels`; refused for other faces."""
    known, probabilities, faces_id = _answers(path)
    if faces_id != fingerprint(faces):
        raise AnswersError(
            f"teacher answers {path} were computed for other faces (other data, order or size)"
        )
    return probabilities[:, _columns(path, known, labels)]


def teacher_probabilities(
    teachers: Sequence[str | Path], faces: np.ndarray, labels: Sequence[str]
) -> np.ndarray:
    """The teachers' mean class probabilities for uint8 `faces` (N, H, W, 1 or 3).

    Columns follow `labels`; every teacher must know all of them.
    """
    if not teachers:
        raise ValueError("distillation needs at least one teacher bundle")
    total = np.zeros((len(faces), len(labels)), dtype=np.float64)
    for teacher in teachers:
        if is_answers_file(teacher):
            total += saved_answers(teacher, faces, labels)
        else:
            total += _bundle_answers(teacher, faces, labels)
    return (total / len(teachers)).astype(np.float32)


def _bundle_answers(teacher: str | Path, faces: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    from ml.models import load_keras_model, resolve_model

    spec, weights = resolve_model(teacher)
    columns = _columns(teacher, spec.labels, labels)
    model = load_keras_model(spec, weights)
    return _predict_all(spec, model, faces, f"teacher {teacher}")[:, columns]


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


def label_agreement(teacher: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """How often the teachers' top answer is the label, and their mean probability on it.

    Teachers that learnt these very faces by heart score high on both and leave little to
    distil beyond the labels.
    """
    agreement = float((teacher.argmax(axis=1) == labels).mean())
    on_label = float(teacher[np.arange(len(teacher)), labels].mean())
    return agreement, on_label


def blended_targets(
    one_hot: np.ndarray, teacher: np.ndarray, weight: float, temperature: float = 1.0
) -> np.ndarray:
    """(1 - weight) x the true label + weight x the teachers' probabilities.

    A temperature above 1 softens the teachers' answers (their logits divided by it), which
    brings out their second choices when they are sure of the first, as teachers are on
    faces they trained on.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distillation weight must be within 0..1, got {weight}")
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    if one_hot.shape != teacher.shape:
        raise ValueError(f"targets {one_hot.shape} and teacher {teacher.shape} do not match")
    softened = np.power(np.clip(teacher, 1e-8, 1.0), 1.0 / temperature)
    softened /= softened.sum(axis=1, keepdims=True)
    return ((1.0 - weight) * one_hot + weight * softened).astype(np.float32)
