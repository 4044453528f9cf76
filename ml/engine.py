"""The inference engine: one per process, its own worker thread, micro-batched classification."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ml.allocator import reuse_freed_memory
from ml.decode import DecodedImage, DecodeLimits
from ml.errors import EngineBusy, EngineClosed, MLError
from ml.faces import Face, FaceDetector
from ml.loader import load_emotion_model
from ml.models import DEFAULT_MODEL, BundleSpec, EmotionModel
from ml.pipeline import FacePipeline, Framing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceEmotion:
    """The emotion read on one face; `box` is (x, y, width, height) in the original image."""

    box: tuple[int, int, int, int]
    detection_confidence: float
    emotion: str
    confidence: float
    scores: dict[str, float]
    unsure: bool

    def ranked(self) -> list[tuple[str, float]]:
        """Labels with their probabilities, most likely first."""
        return sorted(self.scores.items(), key=lambda item: item[1], reverse=True)

    def to_json(self) -> dict[str, Any]:
        """The face as `moodbot analyze --json` and the web API give it."""
        return {
            "box": list(self.box),
            "emotion": self.emotion,
            "confidence": round(self.confidence, 4),
            "unsure": self.unsure,
            "scores": {label: round(p, 4) for label, p in self.scores.items()},
        }


@dataclass(frozen=True)
class Analysis:
    """Every face found in one image, largest first."""

    faces: tuple[FaceEmotion, ...]
    image_size: tuple[int, int]  # (width, height) of the upright original
    model: str
    elapsed_ms: float

    @property
    def primary(self) -> FaceEmotion | None:
        """The largest face: the one a selfie is about."""
        return self.faces[0] if self.faces else None


@dataclass(frozen=True)
class EngineConfig:
    """Tuning knobs of the engine; the defaults suit selfies on a small CPU."""

    limits: DecodeLimits = field(default_factory=DecodeLimits)
    detect_max_side: int = 640
    # In detection-image pixels (5% of its long side): halves MTCNN's work against 20 and, on
    # FER2013 val (60 a class, whole pipeline), finds more faces (339 vs 331 of 416).
    min_face_size: int = 32
    max_faces: int = 20
    # None: the model's own (BundleSpec.crop_margin), which frames faces like its training set.
    crop_margin: float | None = None
    level_faces: bool = True
    unsure_below: float = 0.45
    queue_size: int = 32
    max_batch: int = 16
    # Threads that decode and detect the photos of one batch side by side. MTCNN's graphs
    # barely use a second core on their own, so two photos at once nearly double throughput.
    prepare_threads: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))

    def __post_init__(self) -> None:
        if not 0.0 <= self.unsure_below <= 1.0:
            raise ValueError(f"unsure_below must be within 0..1, got {self.unsure_below!r}")
        for name in ("max_faces", "queue_size", "max_batch", "prepare_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")


@dataclass
class _Job:
    data: bytes
    future: Future[Analysis]


@dataclass
class _Prepared:
    job: _Job
    image: DecodedImage
    faces: list[Face]
    crops: list[np.ndarray]
    started: float


_STOP = object()


def decode_limits_for(config: EngineConfig, model_side: int) -> DecodeLimits:
    """The decode limits for a model: no more pixels than detection and its crops can use.

    A large JPEG is then decoded straight at the detector's scale (libjpeg's DCT scaling),
    which for a 48-pixel model saves decoding and shrinking a 1280x960 photo at full size.
    Models with large inputs (VGG-Face, 224) keep enough pixels for small faces in groups.
    """
    needed = max(config.detect_max_side, 8 * model_side)
    return replace(config.limits, max_side=min(config.limits.max_side, needed))


def serving_framing(spec: BundleSpec, config: EngineConfig) -> Framing:
    """How the bot frames faces for a model: its own margin unless configured, levelled, and
    at most twice its input side (all the detail its resize would use)."""
    margin = spec.crop_margin if config.crop_margin is None else config.crop_margin
    return Framing(margin, config.level_faces, 2 * max(spec.input_size))


def serving_pipeline(
    detector: FaceDetector, spec: BundleSpec, config: EngineConfig, *, model_side: int = 0
) -> FacePipeline:
    """The face pipeline the bot serves `spec` with (evaluation uses it too).

    `model_side`: the largest input side the decoded photos must serve (default: spec's).
    """
    side = max(model_side, *spec.input_size)
    return FacePipeline(
        detector,
        limits=decode_limits_for(config, side),
        max_faces=config.max_faces,
        framing=serving_framing(spec, config),
    )


def select_device() -> str:
    """The TensorFlow device to run on: the first GPU (memory growth on) or the CPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Without memory growth TensorFlow reserves the whole card at the first call.
        tf.config.experimental.set_memory_growth(gpu, True)
    return "GPU:0" if gpus else "CPU:0"


class EmotionEngine:
    """Finds faces and reads their emotions, off the caller's thread, in micro-batches."""

    def __init__(
        self,
        model: EmotionModel,
        detector: FaceDetector,
        config: EngineConfig | None = None,
        *,
        device: str = "CPU:0",
    ) -> None:
        self.model = model
        self.detector = detector
        self.config = config or EngineConfig()
        self.device = device
        self._queue: queue.Queue[object] = queue.Queue(maxsize=self.config.queue_size)
        self._thread = threading.Thread(target=self._work, name="moodbot-engine", daemon=True)
        self._closed = threading.Event()
        self._preparers = ThreadPoolExecutor(
            self.config.prepare_threads, thread_name_prefix="moodbot-prepare"
        )
        self.pipeline = serving_pipeline(detector, model.spec, self.config)

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, config: EngineConfig | None = None) -> EmotionEngine:
        """Load the detector and `model` once, start the worker and warm both up."""
        config = config or EngineConfig()
        reuse_freed_memory()
        device = select_device()
        detector = FaceDetector(
            detect_max_side=config.detect_max_side,
            min_face_size=config.min_face_size,
            device=device,
        )
        engine = cls(load_emotion_model(model), detector, config, device=device)
        engine.start()
        log.info("Emotion engine ready: model %s on %s", engine.model.spec.name, device)
        return engine

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        """True while the worker thread runs and new photos are taken."""
        return not self._closed.is_set() and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread and run one analysis so the first user waits for nothing."""
        self._thread.start()
        self.warm_up()

    def warm_up(self) -> None:
        blank = np.full((240, 320, 3), 128, dtype=np.uint8)
        self.detector.detect(blank)
        side = max(self.model.spec.input_size)
        self.model.predict([np.zeros((side, side, 3), dtype=np.uint8)])

    def submit(self, data: bytes) -> Future[Analysis]:
        """Queue one image; EngineBusy when the queue is full, EngineClosed after close()."""
        if self._closed.is_set():
            raise EngineClosed()
        job = _Job(data=bytes(data), future=Future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise EngineBusy() from None
        return job.future

    async def analyze(self, data: bytes) -> Analysis:
        """Analyse one image without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(data))

    def analyze_blocking(self, data: bytes) -> Analysis:
        """Analyse one image from synchronous code (CLI, training, evaluation)."""
        return self.submit(data).result()

    def close(self, timeout: float = 10.0) -> None:
        """Finish the jobs in hand, refuse the queued ones, and stop the worker."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._fail_queued(EngineClosed())
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self._preparers.shutdown(wait=False, cancel_futures=True)

    async def aclose(self, timeout: float = 10.0) -> None:
        """close() from async code: waiting for the worker's last batch must not stall the loop."""
        await asyncio.to_thread(self.close, timeout)

    # --- worker thread ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            jobs: list[_Job] = [first]  # type: ignore[list-item]
            stop = self._drain_into(jobs)
            self._run_batch(jobs)
            if stop:
                return

    def _drain_into(self, jobs: list[_Job]) -> bool:
        """Add already-waiting jobs to this batch; True when the stop sentinel was met."""
        while len(jobs) < self.config.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            jobs.append(item)  # type: ignore[arg-type]
        return False

    def _run_batch(self, jobs: Sequence[_Job]) -> None:
        prepared = [p for p in self._preparers.map(self._prepare, jobs) if p is not None]
        crops = [crop for p in prepared for crop in p.crops]
        try:
            probabilities = self.model.predict(crops)
        except Exception as exc:
            log.exception("Emotion model failed on a batch of %d faces", len(crops))
            for p in prepared:
                p.job.future.set_exception(MLError(f"The emotion model failed: {exc}"))
            return
        offset = 0
        for p in prepared:
            rows = probabilities[offset : offset + len(p.crops)]
            offset += len(p.crops)
            p.job.future.set_result(self._analysis(p, rows))

    def _prepare(self, job: _Job) -> _Prepared | None:
        """Decode, detect and crop one image; failures go straight to its future."""
        if not job.future.set_running_or_notify_cancel():
            return None
        started = time.perf_counter()
        try:
            found, crops = self.pipeline.run(job.data)
        except MLError as exc:
            job.future.set_exception(exc)
            return None
        except Exception as exc:
            log.exception("Face detection failed")
            job.future.set_exception(MLError(f"Face detection failed: {exc}"))
            return None
        return _Prepared(
            job=job, image=found.image, faces=found.faces, crops=crops, started=started
        )

    def _analysis(self, prepared: _Prepared, rows: np.ndarray) -> Analysis:
        scale = prepared.image.scale
        faces = tuple(
            self._face_emotion(face.scaled(scale), row)
            for face, row in zip(prepared.faces, rows, strict=True)
        )
        return Analysis(
            faces=faces,
            image_size=prepared.image.original_size,
            model=self.model.spec.name,
            elapsed_ms=(time.perf_counter() - prepared.started) * 1000.0,
        )

    def _face_emotion(self, face: Face, row: np.ndarray) -> FaceEmotion:
        labels = self.model.labels
        best = int(np.argmax(row))
        confidence = float(row[best])
        return FaceEmotion(
            box=tuple(round(v) for v in face.box),  # type: ignore[arg-type]
            detection_confidence=round(face.confidence, 4),
            emotion=labels[best],
            confidence=confidence,
            scores={label: float(p) for label, p in zip(labels, row, strict=True)},
            unsure=confidence < self.config.unsure_below,
        )

    def _fail_queued(self, error: MLError) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Job) and item.future.set_running_or_notify_cancel():
                item.future.set_exception(error)
