"""`moodbot eval`: score emotion models on a folder-per-class dataset, alone and as an ensemble.

Folder names are matched to each model's labels through common aliases (anger/angry,
sadness/sad, ..., and the Korean AIHub names). Every image counts: the report leads with the
accuracy over all images, where an image of a class the model does not know, one without a face
and an unreadable file are all wrong; accuracy, macro-F1 and the confusion matrix then cover
the classes the model knows, and the unknown ones are reported (`skipped_classes`).

Without `aligned`, every image goes through the bot's own face pipeline
(`ml.engine.serving_pipeline`: the same decode limits, detector settings and framing), the
largest face is scored, and an image where no face is found counts as a miss.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ml.decode import DecodedImage
from ml.engine import EngineConfig, serving_framing, serving_pipeline
from ml.errors import MLError
from ml.faces import FaceDetector
from ml.loader import load_emotion_model
from ml.models import DEFAULT_MODEL, EmotionModel
from ml.pipeline import FacePipeline, FoundFaces, Framing
from training.aihub import canonical_label, class_images
from training.metrics import classification_report

log = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
NO_FACE = "no_face"


class EvalError(Exception):
    """The evaluation could not run."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


@dataclass(frozen=True)
class Prediction:
    """One image's answer: its class, what the model said (or no_face / unreadable), how sure."""

    path: str
    truth: str
    predicted: str
    confidence: float | None


@dataclass
class EvalResult:
    """One model's scores: over every image, and on the classes of the dataset it knows."""

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
    predictions: list[Prediction] = field(default_factory=list)  # every image, in dataset order

    @property
    def images(self) -> int:
        """Every image of the dataset, whatever its class and whether it could be read."""
        return len(self.predictions)

    @property
    def accuracy_all(self) -> float:
        """Right answers over every image: unknown classes, missed faces, unreadable: wrong."""
        right = sum(p.predicted == p.truth for p in self.predictions)
        return right / len(self.predictions) if self.predictions else 0.0

    def to_json(self) -> dict[str, Any]:
        """The `--json` object."""
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
            "images": self.images,
            "accuracy_all": round(self.accuracy_all, 4),
            "skipped_classes": self.skipped_classes,
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
    ms_per_face: float | None = None  # the ensemble's is the sum of its models'


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
    items = [(path, label) for label, paths in dataset.items() for path in paths]
    report = EvalReport(results=[], dataset={k: len(v) for k, v in dataset.items()})
    pipeline = _pipeline(scores, detector, aligned)
    for s in scores:
        s.model.predict([np.zeros((64, 64, 3), np.uint8)])  # trace the graph before timing
    bar = tqdm(total=len(items), desc="eval", unit="img", disable=not progress)
    with bar:
        for chunk in _chunks(list(enumerate(items)), batch_size):
            found = _found_faces(chunk, pipeline, aligned, report)
            framed: dict[Framing, list[_Crop]] = {}  # models that frame alike share crops
            for s in scores:
                framing = serving_framing(s.model.spec, _CONFIG)
                if framing not in framed:
                    framed[framing] = _framed(found, pipeline, framing)
                _predict(s, framed[framing], tta_flip)
            bar.update(len(chunk))
    if len(scores) > 1:
        scores.append(_ensemble(scores, dataset))
    report.results = [_result(s, dataset, items) for s in scores]
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


# (item, class, the photo and its largest face; None when no face was found or when aligned)
_Found = tuple[int, str, DecodedImage | None, FoundFaces | None]
# (item, class, the face crop, or None when no face was found)
_Crop = tuple[int, str, np.ndarray | None]
_CONFIG = EngineConfig()  # the bot's own limits, detector settings and framing


def _pipeline(scores: list[_Scores], detector: FaceDetector | None, aligned: bool) -> FacePipeline:
    """The bot's face pipeline, decoding enough pixels for the largest model; aligned: decode."""
    if not aligned and detector is None:
        detector = FaceDetector(
            detect_max_side=_CONFIG.detect_max_side, min_face_size=_CONFIG.min_face_size
        )
    side = max(max(s.model.spec.input_size) for s in scores)
    return serving_pipeline(
        None if aligned else detector, scores[0].model.spec, _CONFIG, model_side=side
    )


def _found_faces(
    chunk: list[tuple[int, tuple[Path, str]]],
    pipeline: FacePipeline,
    aligned: bool,
    report: EvalReport,
) -> list[_Found]:
    """The decoded images and their largest faces; unreadable files are left out.

    Cropping waits for `_framed`: models frame faces differently (BundleSpec.crop_margin).
    """
    found: list[_Found] = []
    for index, (path, label) in chunk:
        try:
            image = pipeline.decode(path.read_bytes())
        except (MLError, OSError) as exc:
            report.unreadable.append((str(path), str(exc)))
            continue
        if aligned:  # the image is the face
            found.append((index, label, image, None))
            continue
        faces = pipeline.find(image)
        if not faces.faces:
            report.no_face.append(str(path))
            found.append((index, label, None, None))
            continue
        found.append((index, label, image, faces.largest()))
    return found


def _framed(found: list[_Found], pipeline: FacePipeline, framing: Framing) -> list[_Crop]:
    """Each found face cropped with `framing`; aligned images are the face already."""
    crops: list[_Crop] = []
    for index, label, image, faces in found:
        if image is None:
            crops.append((index, label, None))
        elif faces is None:
            crops.append((index, label, image.pixels))
        else:
            crops.append((index, label, pipeline.crop(faces, framing)[0]))
    return crops


def _predict(s: _Scores, crops: list[_Crop], tta_flip: bool) -> None:
    """Run one model on every face (unknown classes too: it still answers), timing the model."""
    faces = [crop for _, _, crop in crops if crop is not None]
    rows = iter(_timed_predict(s, faces, tta_flip) if faces else ())
    for index, label, crop in crops:
        s.items[index] = (label, None if crop is None else next(rows))


def _timed_predict(s: _Scores, faces: list[np.ndarray], tta_flip: bool) -> np.ndarray:
    if not s.faces:
        # Untimed: the first call traces the model's graph, a one-off cost the served model
        # pays at start-up, not per face (about 0.5-1 ms a face over the 145 SFEW val faces).
        s.model.predict(faces[:1])
    started = time.perf_counter()
    if tta_flip:  # one batch holding the faces and their mirror images
        both = s.model.predict(faces + [np.ascontiguousarray(c[:, ::-1]) for c in faces])
        probabilities = (both[: len(faces)] + both[len(faces) :]) / 2.0
    else:
        probabilities = s.model.predict(faces)
    s.seconds += time.perf_counter() - started
    s.faces += len(faces)
    s.ms_per_face = s.seconds * 1000.0 / s.faces
    return probabilities


def _result(
    s: _Scores, dataset: dict[str, list[Path]], items: list[tuple[Path, str]]
) -> EvalResult:
    miss = len(s.labels)
    known = [s.items[index] for index in sorted(s.items) if s.items[index][0] in s.classes]
    truth = [s.labels.index(label) for label, _ in known]
    predicted = [miss if row is None else int(np.argmax(row)) for _, row in known]
    skipped = {label: len(dataset[label]) for label in sorted(set(dataset) - s.classes)}
    result = _scored(s.name, s.labels, s.classes, truth, predicted, s.ms_per_face, skipped)
    result.predictions = [
        _prediction(str(path), label, s.items.get(index), s.labels)
        for index, (path, label) in enumerate(items)
    ]
    return result


def _prediction(
    path: str, truth: str, item: tuple[str, np.ndarray | None] | None, labels: tuple[str, ...]
) -> Prediction:
    if item is None:  # the file could not be read
        return Prediction(path, truth, "unreadable", None)
    row = item[1]
    if row is None:
        return Prediction(path, truth, NO_FACE, None)
    best = int(np.argmax(row))
    return Prediction(path, truth, labels[best], round(float(row[best]), 4))


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


def _ensemble(scores: list[_Scores], dataset: dict[str, list[Path]]) -> _Scores:
    """Mean probabilities over the labels every model shares, each renormalised over them."""
    first = scores[0]
    shared = tuple(label for label in first.labels if all(label in s.labels for s in scores))
    ensemble = _Scores(first.model, ENSEMBLE, shared, set(dataset) & set(shared))
    for index, (label, row) in first.items.items():
        # An image without a face has none for every model: they share the detection.
        rows = None if row is None else [_over(s.items[index][1], s.labels, shared) for s in scores]
        ensemble.items[index] = (label, None if rows is None else np.mean(rows, axis=0))
    timed = [s.ms_per_face for s in scores if s.ms_per_face is not None]
    ensemble.ms_per_face = float(sum(timed)) if len(timed) == len(scores) else None
    return ensemble


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
    """The results as a few aligned lines for a terminal, led by the accuracy over all images."""
    width = max(len(r.model) for r in report.results)
    lines = [
        f"{'model':<{width}}  {'images':>6}  all-images  |  {'n':>6}  accuracy  macro-F1  ms/face"
    ]
    for r in report.results:
        ms = "-" if r.ms_per_face is None else f"{r.ms_per_face:.2f}"
        lines.append(
            f"{r.model:<{width}}  {r.images:>6}  {r.accuracy_all:10.4f}  |  {r.n:>6}  "
            f"{r.accuracy:8.4f}  {r.macro_f1:8.4f}  {ms:>7}"
        )
    lines.append(
        "all-images: right answers over every image (unknown classes, missed faces and "
        "unreadable files are wrong); n, accuracy, macro-F1: the classes the model knows."
    )
    for r in report.results:
        recalls = ", ".join(f"{k} {v['recall']:.2f}" for k, v in r.per_class.items())
        lines.append(f"{r.model} recall: {recalls}")
    return "\n".join(lines)


def save_predictions_csv(results: Sequence[EvalResult], path: Path) -> Path:
    """One row per image and model: model, path, truth, predicted, confidence."""
    with Path(path).open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["model", "path", "truth", "predicted", "confidence"])
        for r in results:
            for p in r.predictions:
                confidence = "" if p.confidence is None else p.confidence
                writer.writerow([r.model, p.path, p.truth, p.predicted, confidence])
    return path


def describe_problems(report: EvalReport) -> list[str]:
    """What was left out of the scores, one line each (for stderr)."""
    lines = []
    for r in report.results:
        if r.skipped_classes:
            skipped = ", ".join(f"{k} ({_images(n)})" for k, n in r.skipped_classes.items())
            lines.append(
                f"{r.model} does not know these classes (wrong in the accuracy over all "
                f"images; skipped: {skipped})"
            )
    if report.no_face:
        lines.append(f"{_images(len(report.no_face))} without a face (counted as misses).")
    for path, reason in report.unreadable:
        lines.append(f"unreadable, left out: {path}: {reason}")
    return lines


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"
