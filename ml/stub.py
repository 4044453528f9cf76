"""A stand-in engine for deployment tests, where the model is not what is being tested.

`MOODBOT_ENGINE=stub` (bot/settings.py) makes `moodbot run` use it: the real EmotionEngine
(decoding, size guards, queue, "busy", batching, worker thread) with a detector that finds one
face in the middle of every image and a classifier that always reads "happy". It loads no
weights and no TensorFlow, so several replicas start in seconds. Never for users: it does not
look at faces at all, and `moodbot run` says so in its log.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ml.engine import EmotionEngine, EngineConfig
from ml.faces import Face
from ml.models import DEFAULT_MODEL, resolve_model

STUB_EMOTION = "happy"
STUB_CONFIDENCE = 0.9


class StubDetector:
    """One level face covering the middle of the image."""

    def detect(self, rgb: np.ndarray) -> list[Face]:
        height, width = rgb.shape[:2]
        box = (width / 4, height / 4, width / 2, height / 2)
        eyes = {"left_eye": (width * 0.4, height * 0.4), "right_eye": (width * 0.6, height * 0.4)}
        return [Face(box, 0.99, eyes)]


class StubModel:
    """An EmotionModel with the default bundle's labels and input size, always the same reading."""

    def __init__(self) -> None:
        # Only the bundle's manifest is read: no weights, no TensorFlow.
        self.spec, _ = resolve_model(DEFAULT_MODEL)
        self.labels = self.spec.labels
        rest = (1.0 - STUB_CONFIDENCE) / (len(self.labels) - 1)
        self._row = np.full(len(self.labels), rest, dtype=np.float32)
        self._row[self.labels.index(STUB_EMOTION)] = STUB_CONFIDENCE

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        return np.tile(self._row, (len(crops), 1))


def stub_engine(config: EngineConfig | None = None) -> EmotionEngine:
    """A started engine around StubDetector and StubModel."""
    engine = EmotionEngine(StubModel(), StubDetector(), config)  # type: ignore[arg-type]
    engine.start()
    return engine
