"""Folder-per-class face datasets loaded into memory as small uint8 arrays."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from training.aihub import IMAGE_SUFFIXES, DatasetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceArrays:
    """Images (N, size, size, channels) uint8 and their label indices (N,)."""

    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    skipped: dict[str, str]  # file -> reason
    files: tuple[
        str, ...
    ] = ()  # the file of each image, in order (empty when not loaded from files)

    def none(self) -> FaceArrays:
        """No faces, of the same shape and labels."""
        return FaceArrays(self.images[:0], self.labels[:0], self.label_names, {})

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.label_names)}


def load_faces(
    root: Path, label_names: Sequence[str], *, size: int, color: str = "grayscale"
) -> FaceArrays:
    """Every image under root/<label>/ resized to size², as grey or RGB uint8."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    missing = [name for name in label_names if not (root / name).is_dir()]
    if len(missing) == len(label_names):
        raise DatasetError(f"{root} has none of the class folders {', '.join(label_names)}")
    mode, channels = ("L", 1) if color == "grayscale" else ("RGB", 3)
    files = [
        (path, index)
        for index, name in enumerate(label_names)
        if (root / name).is_dir()
        for path in sorted((root / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    images = np.empty((len(files), size, size, channels), dtype=np.uint8)
    labels = np.empty(len(files), dtype=np.int32)
    skipped: dict[str, str] = {}
    kept = 0
    kept_files: list[str] = []
    # A progress bar at a terminal only: in a log file it would be thousands of lines.
    bar = tqdm(files, f"loading {root.name}", unit="img", leave=False, disable=not _tty())
    for path, index in bar:
        try:
            with Image.open(path) as image:
                face = image.convert(mode).resize((size, size), Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            skipped[str(path)] = f"unreadable: {exc}"
            continue
        images[kept] = np.asarray(face, dtype=np.uint8).reshape(size, size, channels)
        labels[kept] = index
        kept_files.append(str(path))
        kept += 1
    if skipped:
        log.warning("Skipped %d unreadable images under %s", len(skipped), root)
    return FaceArrays(images[:kept], labels[:kept], tuple(label_names), skipped, tuple(kept_files))


def _tty() -> bool:
    return sys.stderr.isatty()


def class_weights(labels: np.ndarray, classes: int, power: float = 1.0) -> dict[int, float]:
    """Inverse-frequency weights raised to `power`, normalised to a mean of 1 per sample.

    power 1 weighs every class the same in the loss; 0 is no weighting; in between tempers
    the rare classes' weight.
    """
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = np.where(counts > 0, (counts.sum() / (classes * np.maximum(counts, 1))) ** power, 0)
    weights *= counts.sum() / float((weights * counts).sum())
    return {i: float(w) for i, w in enumerate(weights)}
