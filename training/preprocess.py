"""Crop the largest face of every dataset image with the bot's own code, ready for training.

The crops go to `output_dir/<label>/<name>.png`; a run can be interrupted and started again
(finished crops are kept, earlier failures are not retried), and `preprocess_summary.json` says
what was written and what was skipped, and why.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from ml.decode import DecodedImage
from ml.errors import ImageTooLarge, MLError
from ml.faces import CROP_MARGIN, FaceDetector
from ml.pipeline import FacePipeline, Framing
from training.aihub import DatasetError, Problem, Sample, scan_dataset
from training.options import knob

log = logging.getLogger(__name__)

SUMMARY_FILE = "preprocess_summary.json"
Color = Literal["rgb", "grayscale"]
ImageFormat = Literal["png", "jpg"]
# Failures that depend only on the image and the settings: a resumed run does not retry them.
_STICKY_REASONS = ("no_face", "unreadable", "too_large")
_PREFETCH = 4  # images decoded ahead of the detector, by worker threads


class PreprocessError(DatasetError):
    """The dataset could not be preprocessed."""


class SettingsMismatch(PreprocessError):
    """The output directory holds crops made with other settings."""


@dataclass(frozen=True)
class CropSettings:
    """How faces are found and cropped; part of the summary so a resumed run can check them."""

    # A field made with knob() is also an option of `moodbot preprocess` (training/options.py).
    size: int = knob(224, "Side of the square crops.", envvar="MOODBOT_CROP_SIZE")
    color: Color = knob("rgb", "rgb for VGG-Face.", envvar="MOODBOT_CROP_COLOR")
    margin: float = knob(CROP_MARGIN, "Face size added per side.", envvar="MOODBOT_CROP_MARGIN")
    level: bool = knob(True, "Rotate so the eyes are level.", envvar="MOODBOT_CROP_LEVEL")
    image_format: ImageFormat = knob(
        "png", "Image format of the crops.", option="--format", envvar="MOODBOT_CROP_FORMAT"
    )
    detect_max_side: int = 640
    min_face_size: int = 20

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 1024:
            raise ValueError(f"size must be within 8..1024, got {self.size!r}")
        if self.color not in ("rgb", "grayscale"):
            raise ValueError(f"color must be 'rgb' or 'grayscale', got {self.color!r}")
        if self.margin < 0:
            raise ValueError(f"margin must not be negative, got {self.margin!r}")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image_format must be 'png' or 'jpg', got {self.image_format!r}")


@dataclass
class PreprocessSummary:
    """What one run did: crops written, crops already there, and every skipped image."""

    input_dir: str
    output_dir: str
    layout: str
    settings: dict[str, Any]
    written: int = 0
    existing: int = 0
    multiple_faces: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(items) for reason, items in sorted(self.skipped.items())}

    def skip(self, problem: Problem) -> None:
        self.skipped.setdefault(problem.reason, []).append(problem.to_json())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "skipped_counts": self.skipped_counts}

    def describe(self) -> str:
        """A few human lines for the terminal."""
        skipped = ", ".join(f"{n} {reason}" for reason, n in self.skipped_counts.items())
        classes = ", ".join(f"{label} {n}" for label, n in self.per_class.items())
        lines = [
            f"{self.written} crops written, {self.existing} already there, "
            f"{sum(self.skipped_counts.values())} images skipped ({skipped or 'none'}).",
            f"Crops per class in {self.output_dir}: {classes or 'none'}.",
        ]
        if self.multiple_faces:
            lines.append(f"{self.multiple_faces} images had several faces: kept the largest.")
        return "\n".join(lines + [f"Note: {note}" for note in self.notes])


def preprocess(
    input_dir: Path,
    output_dir: Path,
    *,
    retry_failed: bool = False,
    limit_per_class: int | None = None,
    detector: FaceDetector | None = None,
    progress: bool = True,
    **crop: Any,
) -> PreprocessSummary:
    """Crop the largest face of every image of `input_dir` into `output_dir/<label>/`.

    `crop`: CropSettings fields (size=224, color="rgb", margin, ...).
    """
    settings = CropSettings(**crop)
    # Absolute paths, so a resumed run recognises earlier failures however the path is given.
    input_dir = Path(input_dir).expanduser().resolve()
    output_dir = Path(output_dir).expanduser().resolve()
    previous = _previous_failures(output_dir, settings, retry_failed)
    scan = scan_dataset(input_dir, exclude=(output_dir,))
    summary = PreprocessSummary(
        str(input_dir), str(output_dir), scan.layout, asdict(settings), notes=list(scan.notes)
    )
    for problem in scan.problems:
        summary.skip(problem)
    todo = _plan(scan.samples, output_dir, settings, summary, previous, limit_per_class)
    try:
        if todo:
            detector = detector or FaceDetector(
                detect_max_side=settings.detect_max_side, min_face_size=settings.min_face_size
            )
            # Full-resolution decoding (the default limits) and every face found: a training
            # crop keeps all the pixels its size can use; the summary counts the extra faces.
            pipeline = FacePipeline(detector, framing=Framing(settings.margin, settings.level))
            _run(todo, pipeline, settings, summary, progress)
    finally:
        summary.per_class = _count_outputs(output_dir, settings)
        _write_json_atomic(output_dir / SUMMARY_FILE, summary.to_json())
    return summary


def _plan(
    samples: list[Sample],
    output_dir: Path,
    settings: CropSettings,
    summary: PreprocessSummary,
    previous: dict[str, tuple[str, str]],
    limit_per_class: int | None,
) -> list[tuple[Sample, Path]]:
    """The samples still to crop, with their output paths; the rest go into the summary."""
    todo: list[tuple[Sample, Path]] = []
    targets: set[Path] = set()
    taken: Counter[str] = Counter()
    for sample in samples:
        if limit_per_class is not None and taken[sample.label] >= limit_per_class:
            continue
        taken[sample.label] += 1
        target = output_dir / sample.label / f"{sample.path.stem}.{settings.image_format}"
        if target in targets:
            summary.skip(Problem(sample.path, "duplicate_name", f"another image writes {target}"))
        elif target.is_file():
            summary.existing += 1
        elif str(sample.path) in previous:
            reason, detail = previous[str(sample.path)]
            summary.skip(Problem(sample.path, reason, f"{detail} (earlier run)"))
        else:
            todo.append((sample, target))
        targets.add(target)
    return todo


def _run(
    todo: list[tuple[Sample, Path]],
    pipeline: FacePipeline,
    settings: CropSettings,
    summary: PreprocessSummary,
    progress: bool,
) -> None:
    bar = tqdm(total=len(todo), desc="preprocess", unit="img", disable=not progress)
    with bar:
        for (sample, target), decoded in _decoded(todo, pipeline):
            problem = _crop_one(sample, target, decoded, pipeline, settings, summary)
            if problem:
                summary.skip(problem)
            else:
                summary.written += 1
            bar.update()
            bar.set_postfix(written=summary.written, skipped=len(summary.skipped_counts))


def _decoded(
    todo: list[tuple[Sample, Path]], pipeline: FacePipeline
) -> Iterator[tuple[tuple[Sample, Path], Future[DecodedImage]]]:
    """Decode a few images ahead in threads (Pillow releases the GIL) while MTCNN runs."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool:
        pending: deque[tuple[tuple[Sample, Path], Future[DecodedImage]]] = deque()
        items = iter(todo)
        for item in items:
            pending.append((item, pool.submit(_read_and_decode, item[0].path, pipeline)))
            if len(pending) >= _PREFETCH:
                yield pending.popleft()
        while pending:
            yield pending.popleft()


def _read_and_decode(path: Path, pipeline: FacePipeline) -> DecodedImage:
    return pipeline.decode(path.read_bytes())


def _crop_one(
    sample: Sample,
    target: Path,
    decoded: Future[DecodedImage],
    pipeline: FacePipeline,
    settings: CropSettings,
    summary: PreprocessSummary,
) -> Problem | None:
    """Detect, crop and write one image; a Problem says why it was skipped."""
    try:
        image = decoded.result()
    except ImageTooLarge as exc:
        return Problem(sample.path, "too_large", str(exc))
    except (MLError, OSError) as exc:
        return Problem(sample.path, "unreadable", str(exc))
    try:
        found = pipeline.find(image)
    except Exception as exc:  # TensorFlow fails in many ways; one image must not stop the run
        log.warning("Face detection failed on %s: %s", sample.path, exc)
        return Problem(sample.path, "error", f"face detection failed: {exc}")
    if not found.faces:
        return Problem(sample.path, "no_face", "no face found")
    summary.multiple_faces += len(found.faces) > 1
    crop = pipeline.crop(found.largest())[0]
    _write_image_atomic(resize_crop(crop, settings.size, settings.color), target)
    return None


def resize_crop(crop: np.ndarray, size: int, color: Color) -> Image.Image:
    """Resize an RGB face crop the way `ml.models.preprocess_faces` does when serving."""
    mode = "L" if color == "grayscale" else "RGB"
    image = Image.fromarray(crop).convert(mode)
    return image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)


def _write_image_atomic(image: Image.Image, target: Path) -> None:
    """Write under a temporary name and rename, so a crop on disk is always complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    if target.suffix == ".png":
        image.save(partial, format="PNG")
    else:
        image.save(partial, format="JPEG", quality=95)
    os.replace(partial, target)


def _write_json_atomic(target: Path, data: dict[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, target)


def _previous_failures(
    output_dir: Path, settings: CropSettings, retry_failed: bool
) -> dict[str, tuple[str, str]]:
    """Images an earlier run with these settings could not crop: path -> (reason, detail)."""
    path = output_dir / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        earlier_settings = earlier["settings"]
        skipped = earlier.get("skipped", {})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("Ignoring the unreadable %s: %s", path, exc)
        return {}
    if earlier_settings != asdict(settings):
        differences = _differences(earlier_settings, settings)
        raise SettingsMismatch(
            f"{output_dir} holds crops made with other settings ({differences}); "
            "choose another output directory or delete it."
        )
    if retry_failed:
        return {}
    return {
        item["path"]: (reason, item.get("detail", ""))
        for reason in _STICKY_REASONS
        for item in skipped.get(reason, [])
    }


def _differences(earlier: dict[str, Any], settings: CropSettings) -> str:
    now = asdict(settings)
    return ", ".join(
        f"{key} {earlier.get(key)!r} there, {value!r} now"
        for key, value in now.items()
        if earlier.get(key) != value
    )


def _count_outputs(output_dir: Path, settings: CropSettings) -> dict[str, int]:
    if not output_dir.is_dir():
        return {}
    suffix = f".{settings.image_format}"
    counts = {
        folder.name: sum(1 for p in folder.iterdir() if p.suffix == suffix and p.name[0] != ".")
        for folder in sorted(output_dir.iterdir())
        if folder.is_dir()
    }
    return {label: n for label, n in counts.items() if n}
