"""Load an emotion model by name or path, whichever way it runs: the one entry point above
`ml/models.py` (bundles, Keras), `ml/lite.py` (quantized LiteRT) and `ml/serving.py`
(SavedModel, TF Serving)."""

from __future__ import annotations

from pathlib import Path

from ml.lite import LiteClassifier
from ml.models import (
    LITE_SUFFIX,
    EmotionModel,
    KerasEmotionModel,
    load_keras_model,
    resolve_model,
)
from ml.serving import load_served_model


def load_emotion_model(name_or_path: str | Path) -> EmotionModel:
    """Load a model by registry name or bundle path; ModelLoadError names the file on failure."""
    spec, weights = resolve_model(name_or_path)
    if weights.is_dir():  # a SavedModel written by `moodbot export`
        return load_served_model(spec, weights)
    if weights.suffix == LITE_SUFFIX:  # written by `moodbot quantize`
        return LiteClassifier(spec, weights)
    return KerasEmotionModel(spec, load_keras_model(spec, weights))
