"""`moodbot eval`: score emotion models on a folder-per-class dataset, alone and as an ensemble.

Folder names are matched to each model's labels through common aliases (anger/angry,
sadness/sad, ..., and the Korean AIHub names); classes a model does not know are skipped and
reported. Without `aligned`, every image goes through the bot's own pipeline (decode -> MTCNN ->
largest face -> levelled crop), and an image where no face is found counts as a miss.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ml.decode import DecodeLimits, decode_image
from ml.engine import EngineConfig
from ml.errors import MLError
from ml.faces import Face, FaceDetector, crop_face
from ml.loader import load_emotion_model
from ml.models import DEFAULT_MODEL, EmotionModel
from training.aihub import canonical_label, class_images
from training.metrics import classification_report

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
NO_FACE = "no_face"


class EvalError(Exception):
    """The evaluation could not run."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


@dataclass
class EvalResult:
    """One model's scores on the classes of the dataset it knows."""

    model: str
    labels: tuple[str, ...]  # the model's labels, canonical names, in its output order
    n: int
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, Any]]
    confusion: list[list[int]]  # rows: true label, columns: predicted label
    no_face: list[int]  # per true label: images where no face was found
    ms_per_face: float | None
    skipped_classes: dict[str, int] = field(default_factory=dict)  # unknown class -> images

    def to_json(self) -> dict[str, Any]:
        """The `--json` object: exactly these seven keys."""
        return {
            "model": self.model,
            "n": self.n,
            "accuracy": round(self.accuracy, 4),
            "macro_f1": round(self.macro_f1, 4),
            "per_class": self.per_class,
            "confusion": {
                "labels": list(self.labels),
                "matrix": self.confusion,
                NO_FACE: self.no_face,
            },
            "ms_per_face": None if self.ms_per_face is None else round(self.ms_per_face, 3),
        }


@dataclass
class EvalReport:
    """Every model's result (the ensemble last), and the images that could not be used."""

    results: list[EvalResult]
    dataset: dict[str, int]  # canonical class -> images
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    no_face: list[str] = field(default_factory=list)

    def to_json(self) -> list[dict[str, Any]] | dict[str, Any]:
        objects = [result.to_json() for result in self.results]
        return objects[0] if len(objects) == 1 else objects


@dataclass
class _Scores:
    """Running predictions of one model."""

    model: EmotionModel
    name: str
    labels: tuple[str, ...]
    classes: set[str]  # dataset classes it knows
    # item -> (true class, probabilities, or None when no face was found)
    items: dict[int, tuple[str, np.ndarray | None]] = field(default_factory=dict)
    seconds: float = 0.0
    faces: int = 0


def evaluate(
    dataset_dir: Path,
    models: Sequence[str | Path] = (DEFAULT_MODEL,),
    *,
    aligned: bool = False,
    limit_per_class: int | None = None,
    tta_flip: bool = False,
    batch_size: int = 64,
    detector: FaceDetector | None = None,
    progress: bool = True,
) -> EvalReport:
    """Score `models` (names or bundle directories) on `dataset_dir/<class>/` images."""
    if not models:
        raise EvalError("Give at least one model.")
    dataset = class_images(Path(dataset_dir), limit_per_class)
    if not dataset:
        raise EvalError(f"{dataset_dir} has no class folders with images.")
    scores = [_scores_for(name, dataset) for name in models]
    _name_apart(scores, models)
    wanted = set().union(*(s.classes for s in scores))
    items = [(path, label) for label, paths in dataset.items() if label in wanted for path in paths]
    report = EvalReport(results=[], dataset={k: len(v) for k, v in dataset.items()})
    if not aligned and detector is None:
        config = EngineConfig()
        detector = FaceDetector(
            detect_max_side=config.detect_max_side, min_face_size=config.min_face_size
        )
    for s in scores:
        s.model.predict([np.zeros((64, 64, 3), np.uint8)])  # trace the graph before timing
    bar = tqdm(total=len(items), desc="eval", unit="img", disable=not progress)
    with bar:
        for chunk in _chunks(list(enumerate(items)), batch_size):
            found = _found_faces(chunk, detector, report)
            framed: dict[float, list[_Crop]] = {}  # models that frame alike share crops
            for s in scores:
                margin = s.model.spec.crop_margin
                if margin not in framed:
                    framed[margin] = _framed(found, margin)
                _predict(s, framed[margin], tta_flip)
            bar.update(len(chunk))
    report.results = [_result(s, dataset) for s in scores]
    if len(scores) > 1:
        report.results.append(_ensemble(scores, dataset))
    return report


def _scores_for(name: str | Path, dataset: dict[str, list[Path]]) -> _Scores:
    model = load_emotion_model(name)
    labels = tuple(canonical_label(label) for label in model.labels)
    return _Scores(model, model.spec.name, labels, set(dataset) & set(labels))


def _name_apart(scores: list[_Scores], given: Sequence[str | Path]) -> None:
    """Results of bundles that share a model name are labelled by what was given instead.

    Successive training runs all write a bundle called "moodnet"; side by side they must
    still be told apart.
    """
    names = [s.name for s in scores]
    for s, argument in zip(scores, given, strict=True):
        if names.count(s.name) > 1:
            s.name = str(argument)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# (item, class, image, its largest face: None when aligned or when no face was found)
_Found = tuple[int, str, np.ndarray | None, Face | None]
# (item, class, the face crop, or None when no face was found)
_Crop = tuple[int, str, np.ndarray | None]
_LEVEL_FACES = EngineConfig().level_faces


def _found_faces(
    chunk: list[tuple[int, tuple[Path, str]]],
    detector: FaceDetector | None,
    report: EvalReport,
) -> list[_Found]:
    """The decoded images and their faces; unreadable files are left out.

    Cropping waits for `_framed`: models frame faces differently (BundleSpec.crop_margin).
    """
    found = []
    for index, (path, label) in chunk:
        try:
            pixels = decode_image(path.read_bytes(), DecodeLimits()).pixels
        except (MLError, OSError) as exc:
            report.unreadable.append((str(path), str(exc)))
            continue
        if detector is None:  # aligned: the image is the face
            found.append((index, label, pixels, None))
            continue
        faces = detector.detect(pixels)
        if not faces:
            report.no_face.append(str(path))
            found.append((index, label, None, None))
            continue
        found.append((index, label, pixels, faces[0]))
    return found


def _framed(found: list[_Found], margin: float) -> list[_Crop]:
    """Each found face cropped with `margin`; aligned images are the face already."""
    return [
        (
            index,
            label,
            pixels if face is None else crop_face(pixels, face, margin=margin, level=_LEVEL_FACES),
        )
        for index, label, pixels, face in found
    ]


def _predict(s: _Scores, crops: list[_Crop], tta_flip: bool) -> None:
    """Run one model on the faces of the classes it knows, timing only the model."""
    mine = [(index, label, crop) for index, label, crop in crops if label in s.classes]
    faces = [crop for _, _, crop in mine if crop is not None]
    rows = iter(_timed_predict(s, faces, tta_flip) if faces else ())
    for index, label, crop in mine:
        s.items[index] = (label, None if crop is None else next(rows))


def _timed_predict(s: _Scores, faces: list[np.ndarray], tta_flip: bool) -> np.ndarray:
    started = time.perf_counter()
    if tta_flip:  # one batch holding the faces and their mirror images
        both = s.model.predict(faces + [np.ascontiguousarray(c[:, ::-1]) for c in faces])
        probabilities = (both[: len(faces)] + both[len(faces) :]) / 2.0
    else:
        probabilities = s.model.predict(faces)
    s.seconds += time.perf_counter() - started
    s.faces += len(faces)
    return probabilities


def _result(s: _Scores, dataset: dict[str, list[Path]]) -> EvalResult:
    miss = len(s.labels)
    ordered = [s.items[index] for index in sorted(s.items)]
    truth = [s.labels.index(label) for label, _ in ordered]
    predicted = [miss if row is None else int(np.argmax(row)) for _, row in ordered]
    ms = s.seconds * 1000.0 / s.faces if s.faces else None
    skipped = {label: len(dataset[label]) for label in sorted(set(dataset) - s.classes)}
    return _scored(s.name, s.labels, s.classes, truth, predicted, ms, skipped)


def _scored(
    name: str,
    labels: tuple[str, ...],
    classes: set[str],
    truth: list[int],
    predicted: list[int],
    ms_per_face: float | None,
    skipped: dict[str, int],
) -> EvalResult:
    # A miss is a prediction of an extra "no_face" label: wrong for every class, and its
    # own column of the confusion matrix, which is then reported apart.
    report = classification_report(
        np.asarray(truth, dtype=np.int64),
        np.asarray(predicted, dtype=np.int64),
        (*labels, NO_FACE),
    )
    matrix = np.asarray(report["confusion"], dtype=np.int64)
    per_class = {}
    for i, label in enumerate(labels):
        if label in classes:
            per_class[label] = {**report["per_class"][label], NO_FACE: int(matrix[i, -1])}
    return EvalResult(
        model=name,
        labels=labels,
        n=report["n"],
        accuracy=report["accuracy"],
        macro_f1=report["macro_f1"],
        per_class=per_class,
        confusion=matrix[:-1, :-1].tolist(),
        no_face=matrix[:-1, -1].tolist(),
        ms_per_face=ms_per_face,
        skipped_classes=skipped,
    )


def _ensemble(scores: list[_Scores], dataset: dict[str, list[Path]]) -> EvalResult:
    """Mean probabilities over the labels every model shares, each renormalised over them."""
    first = scores[0]
    shared = tuple(label for label in first.labels if all(label in s.labels for s in scores))
    classes = set(dataset) & set(shared)
    truth, predicted = [], []
    for index, (label, row) in sorted(first.items.items()):
        if label not in classes:
            continue
        truth.append(shared.index(label))
        if row is None:  # the same image has no face for every model
            predicted.append(len(shared))
            continue
        rows = [_over(s.items[index][1], s.labels, shared) for s in scores]
        predicted.append(int(np.argmax(np.mean(rows, axis=0))))
    timed = [s.seconds * 1000.0 / s.faces for s in scores if s.faces]
    ms = float(sum(timed)) if len(timed) == len(scores) else None
    skipped = {label: len(dataset[label]) for label in sorted(set(dataset) - classes)}
    return _scored(ENSEMBLE, shared, classes, truth, predicted, ms, skipped)


def _over(row: Any, labels: tuple[str, ...], shared: tuple[str, ...]) -> np.ndarray:
    picked = np.asarray(row)[[labels.index(label) for label in shared]]
    total = float(picked.sum())
    return picked / total if total > 0 else np.full(len(shared), 1.0 / len(shared))


def save_confusion_png(results: Sequence[EvalResult], path: Path) -> Path:
    """Every result's confusion matrix side by side (rows: true class, shaded by recall)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.8 * len(results), 4.6), layout="constrained")
    panels = figure.subplots(1, len(results), squeeze=False)[0]
    for axes, result in zip(panels, results, strict=True):
        rows = [i for i, label in enumerate(result.labels) if label in result.per_class]
        columns = list(result.labels) + ([NO_FACE] if any(result.no_face) else [])
        matrix = np.asarray(
            [
                result.confusion[i] + ([result.no_face[i]] if any(result.no_face) else [])
                for i in rows
            ]
        ).reshape(len(rows), len(columns))
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for (r, c), count in np.ndenumerate(matrix):
            colour = "white" if shares[r, c] > 0.5 else "black"
            axes.text(c, r, str(count), ha="center", va="center", color=colour, fontsize=8)
        axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
        axes.set_yticks(range(len(rows)), [result.labels[i] for i in rows])
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        axes.set_title(
            f"{result.model}\nacc {result.accuracy:.3f}, macro-F1 {result.macro_f1:.3f}",
            fontsize=10,
        )
    figure.savefig(path, dpi=110)
    return path


def format_report(report: EvalReport) -> str:
    """The results as a few aligned lines for a terminal."""
    width = max(len(r.model) for r in report.results)
    lines = [f"{'model':<{width}}  {'n':>6}  accuracy  macro-F1  ms/face"]
    for r in report.results:
        ms = "-" if r.ms_per_face is None else f"{r.ms_per_face:.2f}"
        lines.append(f"{r.model:<{width}}  {r.n:>6}  {r.accuracy:8.4f}  {r.macro_f1:8.4f}  {ms:>7}")
    for r in report.results:
        recalls = ", ".join(f"{k} {v['recall']:.2f}" for k, v in r.per_class.items())
        lines.append(f"{r.model} recall: {recalls}")
    return "\n".join(lines)


def describe_problems(report: EvalReport) -> list[str]:
    """What was left out of the scores, one line each (for stderr)."""
    lines = []
    for r in report.results:
        if r.skipped_classes:
            skipped = ", ".join(f"{k} ({_images(n)})" for k, n in r.skipped_classes.items())
            lines.append(f"{r.model} does not know these classes, skipped: {skipped}")
    if report.no_face:
        lines.append(f"{_images(len(report.no_face))} without a face (counted as misses).")
    for path, reason in report.unreadable:
        lines.append(f"unreadable, left out: {path}: {reason}")
    return lines


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"
