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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import requests

from ml.errors import ModelLoadError
from ml.models import (
    BUNDLE_FILE,
    BundleClassifier,
    BundleSpec,
    EmotionModel,
    load_keras_model,
    resolve_model,
)

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
    keras_model = load_keras_model(spec, weights)
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


def load_served_model(spec: BundleSpec, location: Path) -> EmotionModel:
    """The classifier of an exported bundle: over REST when it names a server, else in-process.

    `spec` and `location` are what `resolve_model` returns for the bundle directory.
    """
    url = spec.extra.get("serving", {}).get("url")
    if url:
        return TFServingClassifier(spec, url)
    return SavedModelClassifier(spec, location)


class SavedModelClassifier(BundleClassifier):
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
        self.spec = spec
        self.source = f"Model {spec.name!r}"
        self._call = lambda batch: function(**{name: tf.constant(batch)})[output]
        log.info("Loaded emotion model %s from the SavedModel %s", spec.name, directory)

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._call(batch))


class TFServingClassifier(BundleClassifier):
    """A classifier served by TensorFlow Serving, called over its REST predict API.

    Called from the engine's worker thread, so a blocking HTTP request is fine there.
    """

    def __init__(self, spec: BundleSpec, url: str, *, timeout_s: float = REST_TIMEOUT_S) -> None:
        self.spec = spec
        self.source = "TensorFlow Serving"
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        log.info("Emotion model %s is served by %s", spec.name, self.url)

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        body = {"signature_name": SIGNATURE, "instances": batch.tolist()}
        try:
            response = requests.post(f"{self.url}:predict", json=body, timeout=self.timeout_s)
            response.raise_for_status()
            return np.asarray(response.json()["predictions"], dtype=np.float32)
        # requests' errors are OSErrors; a body that is not JSON is a ValueError.
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # ModelLoadError: at start-up (the engine's warm-up) the CLI prints it as one line;
            # later the engine turns any model failure into the user's "something went wrong".
            raise ModelLoadError(f"TensorFlow Serving at {self.url} failed: {exc}") from exc
