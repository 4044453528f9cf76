"""The face datasets we train on, each with its labels and the grouping it must be split by.

Faces of one person (AIHub) or one film (SFEW) look alike far beyond their expression: a split
that puts the same person on both sides measures memory of faces, not emotion reading. So
every source names the group a file belongs to, and `group_split` keeps each group whole on one
side. The split is a pure function of the group's name (a hash), so it is the same on every
machine and for every run, with no list of names to ship.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from training.aihub import IMAGE_SUFFIXES, DatasetError

# A film id carries a frame suffix in a few SFEW names ("OceansThirteen-010619400").
_FRAME_SUFFIX = re.compile(r"-\d+$")


def person_of(path: Path) -> str:
    """AIHub: `<person-hash>_<gender>_<age>_<emotion>_<place>_<time>.jpg` -> the person."""
    return path.name.split("_", 1)[0]


def film_of(path: Path) -> str:
    """SFEW: `<film>_<frame>_<face>.jpg` -> the film, franchises taken together.

    The dataset's rule is the first `_` field; sequels share their cast, so the Ocean's films
    count as one group (the Harry Potter films already do under the first-field rule).
    """
    film = _FRAME_SUFFIX.sub("", path.name.split("_", 1)[0])
    return "Oceans" if film.startswith("Oceans") else film


def file_of(path: Path) -> str:
    """Every file its own group: a random split, only to show how much it inflates a score."""
    return path.name


GROUPINGS: dict[str, Callable[[Path], str]] = {
    "person": person_of,
    "film": film_of,
    "file": file_of,
}


def in_validation(group: str, share: float, salt: str = "moodbot") -> bool:
    """Whether a group lies on the validation side: a stable hash of its name, never random."""
    digest = hashlib.sha256(f"{salt}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def group_split(groups: Sequence[str], share: float, salt: str = "moodbot") -> np.ndarray:
    """A boolean mask: True for files whose group lies on the validation side."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"the validation share must be within (0, 1), got {share!r}")
    decided: dict[str, bool] = {}
    return np.array(
        [decided.setdefault(g, in_validation(g, share, salt)) for g in groups], dtype=bool
    )


def halves(groups: Sequence[str], salt: str = "halves") -> np.ndarray:
    """A boolean mask splitting whole groups into two halves, alternating in a stable hash
    order, so that both halves hold a group whenever there are two (a hash threshold could
    put all of a small val's films on one side)."""
    order = sorted(set(groups), key=lambda g: hashlib.sha256(f"{salt}:{g}".encode()).digest())
    second = {g: i % 2 == 1 for i, g in enumerate(order)}
    return np.array([second[g] for g in groups], dtype=bool)


def split_folder(root: Path, out: Path, by: str, share: float = 0.2) -> dict[str, dict[str, int]]:
    """Link every image under root/<class>/ into out/{train,val}/<class>/, whole groups per side.

    Returns the image and group counts per side. Links, not copies: the images stay where the
    dataset was unpacked, and the split costs no disk. Re-running replaces the split.
    """
    group_of = GROUPINGS.get(by)
    if group_of is None:
        raise ValueError(f"unknown grouping {by!r}; choose one of {', '.join(GROUPINGS)}")
    files = sorted(
        p for p in root.glob("*/*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DatasetError(f"{root} has no images in class folders (root/<class>/<image>)")
    groups = [group_of(p) for p in files]
    is_val = group_split(groups, share)
    counts = {side: {"images": 0, "groups": 0} for side in ("train", "val")}
    for side, wanted in (("train", False), ("val", True)):
        side_dir = out / side
        if side_dir.exists():
            for old in side_dir.glob("*/*"):
                old.unlink()
        chosen = [(p, g) for p, g, v in zip(files, groups, is_val, strict=True) if v == wanted]
        for path, _ in chosen:
            target = side_dir / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
        counts[side] = {"images": len(chosen), "groups": len({g for _, g in chosen})}
    return counts
