"""`moodbot export`: the bundled model as a SavedModel, called in-process and over REST."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from ml.decode import decode_image
from ml.engine import EmotionEngine
from ml.errors import MLError
from ml.faces import crop_face
from ml.loader import load_emotion_model
from ml.models import resolve_model
from ml.serving import (
    SavedModelClassifier,
    TFServingClassifier,
    export_saved_model,
    load_served_model,
)

pytestmark = pytest.mark.slow

# A SavedModel is made from a Keras bundle (the quantized default has no Keras form).
EXPORTED = "moodnet-blend"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / EXPORTED
    export_saved_model(EXPORTED, out)
    return out


@pytest.fixture(scope="module")
def source_engine(engine: EmotionEngine) -> Iterator[EmotionEngine]:
    """The engine on the exported Keras bundle itself, sharing the session's detector."""
    source = EmotionEngine(load_emotion_model(EXPORTED), engine.detector, engine.config)
    source.start()
    yield source
    source.close()


@pytest.fixture(scope="module")
def crops(
    engine: EmotionEngine, astronaut_jpeg: bytes, grace_hopper_jpeg: bytes, group_photo: bytes
) -> list[np.ndarray]:
    """Every face crop the engine would classify in the real photos."""
    found = []
    for data in (astronaut_jpeg, grace_hopper_jpeg, group_photo):
        pixels = decode_image(data).pixels
        found += [crop_face(pixels, face) for face in engine.detector.detect(pixels)]
    assert len(found) == 4  # astronaut, Hopper, and both again in the group photo
    return found


def test_export_writes_a_versioned_saved_model_and_its_bundle(exported: Path) -> None:
    assert (exported / "1" / "saved_model.pb").is_file()
    assert (exported / "1" / "variables").is_dir()
    spec, location = resolve_model(exported)
    original, _ = resolve_model(EXPORTED)
    assert location == exported / "1"
    assert (spec.name, spec.labels, spec.input_size) == (
        original.name,
        original.labels,
        original.input_size,
    )
    assert (spec.color, spec.normalization) == (original.color, original.normalization)
    assert spec.extra["serving"] == {"format": "tf_saved_model", "signature": "serving_default"}


def test_saved_model_predicts_what_the_keras_model_predicts(
    exported: Path, source_engine: EmotionEngine, crops: list[np.ndarray]
) -> None:
    model = load_served_model(*resolve_model(exported))
    assert isinstance(model, SavedModelClassifier)
    assert model.labels == source_engine.model.labels
    served, keras = model.predict(crops), source_engine.model.predict(crops)
    assert served.shape == (len(crops), len(model.labels))
    np.testing.assert_allclose(served, keras, rtol=1e-4, atol=1e-5)
    assert model.labels[int(np.argmax(served[0]))] == "happy"  # the smiling astronaut


def test_engine_runs_on_the_saved_model(
    exported: Path, source_engine: EmotionEngine, astronaut_jpeg: bytes
) -> None:
    model = load_emotion_model(exported)  # what MOODBOT_MODEL=<exported dir> loads
    assert isinstance(model, SavedModelClassifier)
    served_engine = EmotionEngine(model, source_engine.detector, source_engine.config)
    served_engine.start()
    try:
        analysis = served_engine.analyze_blocking(astronaut_jpeg)
    finally:
        served_engine.close()
    expected = source_engine.analyze_blocking(astronaut_jpeg)
    assert [f.box for f in analysis.faces] == [f.box for f in expected.faces]
    assert analysis.primary and expected.primary
    assert analysis.primary.emotion == expected.primary.emotion == "happy"
    assert analysis.primary.confidence == pytest.approx(expected.primary.confidence, abs=1e-5)


class FakeTFServing(BaseHTTPRequestHandler):
    """TensorFlow Serving's REST predict endpoint, answered by the exported SavedModel."""

    serve: object  # the SavedModel's serving_default signature
    requests: list[dict]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if self.path != "/v1/models/moodnet:predict":
            self._answer(404, {"error": "Servable not found"})
            return
        batch = tf.constant(body["instances"], dtype=tf.float32)
        (probabilities,) = type(self).serve(batch).values()
        self._answer(200, {"predictions": probabilities.numpy().tolist()})

    def _answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tf_serving(exported: Path) -> Iterator[str]:
    FakeTFServing.serve = tf.saved_model.load(str(exported / "1")).signatures["serving_default"]
    FakeTFServing.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeTFServing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_rest_client_gets_the_same_probabilities(
    tf_serving: str, source_engine: EmotionEngine, crops: list[np.ndarray]
) -> None:
    source = source_engine.model
    model = TFServingClassifier(source.spec, f"{tf_serving}/v1/models/moodnet/")
    np.testing.assert_allclose(model.predict(crops), source.predict(crops), rtol=1e-4, atol=1e-5)
    (request,) = FakeTFServing.requests
    assert request["signature_name"] == "serving_default"
    assert np.asarray(request["instances"]).shape == (len(crops), 48, 48, 1)


def test_rest_client_failures_are_named(
    tf_serving: str, source_engine: EmotionEngine, crops: list[np.ndarray]
) -> None:
    spec = source_engine.model.spec
    with pytest.raises(MLError, match="404"):
        TFServingClassifier(spec, f"{tf_serving}/v1/models/other").predict(crops[:1])
    closed = TFServingClassifier(spec, "http://127.0.0.1:9/v1/models/moodnet", timeout_s=2)
    with pytest.raises(MLError, match=re.escape("TensorFlow Serving at http://127.0.0.1:9/")):
        closed.predict(crops[:1])


def test_export_command(tmp_path: Path) -> None:
    from bot.cli import app

    runner = CliRunner()
    url = "http://tfserving:8501/v1/models/moodnet"
    out = tmp_path / "out"
    args = ["export", "moodnet", str(out), "--version", "3", "--serving-url", url]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "3" / "saved_model.pb").is_file()
    assert str(out / "3") in result.output
    # A bundle that names a server is called over REST, not loaded in-process.
    model = load_served_model(*resolve_model(out))
    assert isinstance(model, TFServingClassifier) and model.url == url
    # Exporting again replaces the version; a directory that is not a SavedModel is kept.
    assert runner.invoke(app, args).exit_code == 0
    (out / "4").mkdir()
    (out / "4" / "notes.txt").write_text("mine")
    kept = runner.invoke(app, ["export", "moodnet", str(out), "--version", "4"])
    assert kept.exit_code == 1 and "not a SavedModel" in kept.output
    assert (out / "4" / "notes.txt").read_text() == "mine"
    missing = runner.invoke(app, ["export", str(tmp_path / "nowhere"), str(tmp_path / "x")])
    assert missing.exit_code == 1
    assert "Unknown model" in missing.output
    assert not (tmp_path / "x").exists()


def test_moodbot_model_set_to_a_served_bundle_uses_tf_serving(
    tmp_path: Path, tf_serving: str, astronaut_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MOODBOT_MODEL=<bundle from `moodbot export --serving-url`>: the classifier is remote."""
    from bot.settings import load_settings

    bundle = tmp_path / "moodnet-served"
    export_saved_model(EXPORTED, bundle, serving_url=f"{tf_serving}/v1/models/moodnet")
    monkeypatch.setenv("MOODBOT_MODEL", str(bundle))
    settings = load_settings()
    # What bot/app.py does at start-up with MOODBOT_MODEL.
    served = EmotionEngine.load(settings.model, settings.engine_config())
    try:
        assert isinstance(served.model, TFServingClassifier)
        calls_at_start = len(FakeTFServing.requests)  # the warm-up already asked the server
        analysis = served.analyze_blocking(astronaut_jpeg)
    finally:
        served.close()
    assert analysis.primary and analysis.primary.emotion == "happy"
    assert len(FakeTFServing.requests) == calls_at_start + 1
