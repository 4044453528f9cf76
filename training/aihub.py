"""Read a face-emotion dataset: the AIHub Korean layout, a folder per class, or labelled names.

AIHub layout (as the original project used it): one folder per Korean emotion (기쁨 happy,
슬픔 sad, 분노 angry, 불안 anxious, 상처 hurt, 중립 neutral; the seven-emotion release adds 당황
embarrassed) and beside them `<emotion>.json`, a list of records with `filename` and
`faceExp_uploader`; the file names look like
`<hash>_<gender>_<age>_<emotion>_<place>_<timestamp>.jpg`.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ml.labels import ALIASES, KOREAN_NAMES

log = logging.getLogger(__name__)

KOREAN_EMOTIONS = {korean: label for label, korean in KOREAN_NAMES.items()}
LABEL_ALIASES = ALIASES
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})
_NAME_LABEL_FIELD = 3  # <hash>_<gender>_<age>_<emotion>_<place>_<timestamp>
Layout = Literal["aihub", "folders", "names"]


class DatasetError(Exception):
    """The dataset could not be read."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class DatasetNotFound(DatasetError):
    """The dataset directory does not exist."""


class EmptyDataset(DatasetError):
    """The dataset directory holds no labelled images."""


@dataclass(frozen=True)
class Sample:
    """One labelled image of the dataset."""

    path: Path
    label: str  # canonical English label


@dataclass(frozen=True)
class Problem:
    """An image left out of the dataset, and why."""

    path: Path
    reason: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"path": str(self.path), "detail": self.detail}


@dataclass
class DatasetScan:
    """What a dataset directory holds: usable samples and everything left out."""

    root: Path
    layout: Layout
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def class_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.label for s in self.samples).items()))


def nfc(text: str) -> str:
    """Unicode NFC: Korean names unpacked on macOS arrive decomposed (NFD)."""
    return unicodedata.normalize("NFC", text)


def canonical_label(name: str) -> str:
    """The label a folder or record name stands for: Korean and common aliases mapped."""
    key = nfc(name).strip()
    if key in KOREAN_EMOTIONS:
        return KOREAN_EMOTIONS[key]
    key = key.lower().replace(" ", "_").replace("-", "_")
    return LABEL_ALIASES.get(key, key)


def label_from_filename(name: str) -> str | None:
    """The emotion in an AIHub file name (its fourth `_` field), or None when there is none."""
    fields = nfc(Path(name).stem).split("_")
    if len(fields) <= _NAME_LABEL_FIELD:
        return None
    return KOREAN_EMOTIONS.get(fields[_NAME_LABEL_FIELD])


def is_image(path: Path) -> bool:
    return (
        path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


def class_images(root: Path, limit_per_class: int | None = None) -> dict[str, list[Path]]:
    """Canonical label -> sorted image files of `root/<class>/` (folders named by any alias)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFound(f"Dataset directory {root} does not exist.")
    by_label: dict[str, list[Path]] = {}
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if is_image(p))
        if files:
            by_label.setdefault(canonical_label(folder.name), []).extend(files)
    return {label: files[:limit_per_class] for label, files in sorted(by_label.items())}


def scan_dataset(root: Path, *, exclude: tuple[Path, ...] = ()) -> DatasetScan:
    """Find every labelled image under `root`, cross-checking the labels AIHub gives twice."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFound(f"Dataset directory {root} does not exist.")
    excluded = {p.resolve() for p in exclude}
    folders = [
        d
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".") and d.resolve() not in excluded
    ]
    if any(nfc(d.name) in KOREAN_EMOTIONS for d in folders):
        scan = _scan_aihub(root, folders)
    elif folders:
        scan = _scan_folders(root, folders)
    else:
        scan = _scan_names(root)
    if not scan.samples:
        raise EmptyDataset(
            f"{root} holds no labelled images (looked for Korean emotion folders, a folder "
            "per class, or AIHub file names)."
        )
    return scan


def _scan_aihub(root: Path, folders: list[Path]) -> DatasetScan:
    scan = DatasetScan(root=root, layout="aihub")
    for folder in folders:
        korean = nfc(folder.name)
        if korean not in KOREAN_EMOTIONS:
            scan.notes.append(f"ignored folder {folder.name!r}: not a Korean emotion name")
            continue
        records = _read_records(root, korean, scan)
        for path in sorted(p for p in folder.iterdir() if is_image(p)):
            record = records.pop(nfc(path.name), None)
            _add(scan, path, KOREAN_EMOTIONS[korean], record)
        if records:
            scan.notes.append(
                f"{korean}.json lists {len(records)} file(s) missing from {folder.name}/"
            )
    return scan


def _scan_folders(root: Path, folders: list[Path]) -> DatasetScan:
    scan = DatasetScan(root=root, layout="folders")
    for folder in folders:
        images = sorted(p for p in folder.iterdir() if is_image(p))
        if not images:
            scan.notes.append(f"ignored folder {folder.name!r}: no images")
        for path in images:
            _add(scan, path, canonical_label(folder.name), None)
    return scan


def _scan_names(root: Path) -> DatasetScan:
    scan = DatasetScan(root=root, layout="names")
    for path in sorted(p for p in root.iterdir() if is_image(p)):
        label = label_from_filename(path.name)
        if label is None:
            scan.problems.append(Problem(path, "no_label", "no emotion in the file name"))
        else:
            scan.samples.append(Sample(path, label))
    return scan


def _add(scan: DatasetScan, path: Path, label: str, record: dict[str, Any] | None) -> None:
    """Add one image unless its file name or JSON record names another emotion."""
    from_name = label_from_filename(path.name)
    uploaded = record.get("faceExp_uploader") if record else None
    from_json = canonical_label(str(uploaded)) if uploaded else None
    if (from_name and from_name != label) or (from_json and from_json != label):
        detail = f"folder says {label}, file name says {from_name}, JSON says {from_json}"
        scan.problems.append(Problem(path, "label_mismatch", detail))
        return
    scan.samples.append(Sample(path, label))


def _read_records(root: Path, korean: str, scan: DatasetScan) -> dict[str, dict[str, Any]]:
    """file name -> record from `<korean>.json`; an unreadable file is noted, not fatal."""
    path = next((p for p in root.glob("*.json") if nfc(p.stem) == korean), None)
    if path is None:
        scan.notes.append(f"no {korean}.json: labels checked against file names only")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        scan.notes.append(f"{path.name} could not be read ({exc}): file names only")
        log.warning("Could not read %s: %s", path, exc)
        return {}
    if not isinstance(data, list):
        scan.notes.append(f"{path.name} is not a JSON list of records: file names only")
        return {}
    records = {}
    for item in data:
        if isinstance(item, dict) and isinstance(item.get("filename"), str):
            records[nfc(item["filename"])] = item
    return records
