"""The emotion classifier outside Keras: export it as a SavedModel, and call one back.

`export_saved_model` writes a directory TensorFlow Serving can serve as it is:

    OUT_DIR/bundle.json        the bundle spec (labels, input size, colour, normalisation)
    OUT_DIR/1/saved_model.pb   the classifier, signature `serving_default`, version 1
    OUT_DIR/1/variables/

The SavedModel takes preprocessed faces (float32, batch x height x width x channels, as
`preprocess_faces` makes them) and returns one probability row per face. Preprocessing stays
with the caller, in `ml/models.py`, so in-process, SavedModel and TF Serving inference share it.

`load_served_model` turns such a directory back into a classifier with the engine's interface
(`spec`, `labels`, `predict(crops)`): in-process from the SavedModel, or over TF Serving's REST
API when the bundle names a server (`extra.serving.url`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import requests

from ml.errors import ModelLoadError
from ml.models import BUNDLE_FILE, BundleSpec, EmotionModel, preprocess_faces, resolve_model

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
REST_TIMEOUT_S = 5.0


def export_saved_model(
    name_or_path: str | Path,
    out_dir: str | Path,
    *,
    version: int = 1,
    serving_url: str | None = None,
) -> Path:
    """Write the classifier of a model bundle as a SavedModel under `out_dir/<version>`.

    `serving_url` (e.g. http://tfserving:8501/v1/models/moodnet) goes into bundle.json: a
    bundle that names a server is called over REST instead of in-process.
    """
    if version < 1:
        raise ValueError(f"version must be at least 1, got {version!r}")
    spec, weights = resolve_model(name_or_path)
    out = Path(out_dir).expanduser()
    target = out / str(version)
    if target.exists() and not (target / "saved_model.pb").is_file():
        raise FileExistsError(f"{target} exists and is not a SavedModel; not replacing it.")
    keras_model = _load_keras(weights)
    if target.exists():
        shutil.rmtree(target)  # re-exporting a version replaces it whole
    out.mkdir(parents=True, exist_ok=True)
    keras_model.export(str(target), format="tf_saved_model", verbose=False)
    serving: dict[str, Any] = {"format": "tf_saved_model", "signature": SIGNATURE}
    if serving_url:
        serving["url"] = serving_url.rstrip("/")
    exported = replace(spec, model_file=str(version), extra={**spec.extra, "serving": serving})
    (out / BUNDLE_FILE).write_text(json.dumps(exported.to_json(), indent=2), encoding="utf-8")
    log.info("Exported %s as a SavedModel to %s", spec.name, target)
    return target


def _load_keras(weights: Path) -> Any:
    if not weights.is_file():
        raise ModelLoadError(f"Model file {weights} does not exist.")
    import keras

    import ml.layers  # noqa: F401  (registers the custom layers that bundles may use)

    try:
        return keras.models.load_model(weights, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged file; all mean the same.
        raise ModelLoadError(f"Model file {weights} could not be loaded: {exc}") from exc


def load_served_model(spec: BundleSpec, location: Path) -> EmotionModel:
    """The classifier of an exported bundle: over REST when it names a server, else in-process.

    `spec` and `location` are what `resolve_model` returns for the bundle directory.
    """
    url = spec.extra.get("serving", {}).get("url")
    if url:
        return TFServingClassifier(spec, url)
    return SavedModelClassifier(spec, location)


class _Endpoint:
    """Gives a SavedModel function the call signature of a Keras model."""

    def __init__(self, function: Any) -> None:
        self._function = function

    def __call__(self, batch: Any, training: bool = False) -> Any:
        return self._function(batch)


class SavedModelClassifier(EmotionModel):
    """An exported classifier, run in-process by TensorFlow (no Keras model file needed)."""

    def __init__(self, spec: BundleSpec, directory: Path) -> None:
        import tensorflow as tf

        try:
            self._saved = tf.saved_model.load(str(directory))
            function = self._saved.signatures[SIGNATURE]
        except (OSError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"{directory} is not a usable SavedModel: {exc}") from exc
        # One named input (the faces) and one named output (the probabilities).
        (name,) = function.structured_input_signature[1]
        (output,) = function.structured_outputs
        super().__init__(spec, _Endpoint(lambda batch: function(**{name: batch})[output]))
        log.info("Loaded emotion model %s from the SavedModel %s", spec.name, directory)


class TFServingClassifier(EmotionModel):
    """A classifier served by TensorFlow Serving, called over its REST predict API.

    Called from the engine's worker thread, so a blocking HTTP request is fine there.
    """

    def __init__(self, spec: BundleSpec, url: str, *, timeout_s: float = REST_TIMEOUT_S) -> None:
        # No Keras model here: predict() below replaces the in-process forward pass.
        self.spec = spec
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        log.info("Emotion model %s is served by %s", spec.name, self.url)

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities from the server, shape (len(crops), len(labels))."""
        if not crops:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        batch = preprocess_faces(self.spec, crops)
        body = {"signature_name": SIGNATURE, "instances": batch.tolist()}
        try:
            response = requests.post(f"{self.url}:predict", json=body, timeout=self.timeout_s)
            response.raise_for_status()
            probabilities = np.asarray(response.json()["predictions"], dtype=np.float32)
        # requests' errors are OSErrors; a body that is not JSON is a ValueError.
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # ModelLoadError: at start-up (the engine's warm-up) the CLI prints it as one line;
            # later the engine turns any model failure into the user's "something went wrong".
            raise ModelLoadError(f"TensorFlow Serving at {self.url} failed: {exc}") from exc
        if probabilities.shape != (len(crops), len(self.labels)):
            raise ModelLoadError(
                f"TensorFlow Serving returned shape {probabilities.shape}, "
                f"expected ({len(crops)}, {len(self.labels)})."
            )
        return probabilities
