"""`moodbot quantize`: a Keras bundle stored with 8-bit weights, run by the LiteRT interpreter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bot.cli import app
from ml.decode import decode_image
from ml.engine import EmotionEngine
from ml.errors import ModelLoadError
from ml.faces import crop_face
from ml.lite import LiteClassifier
from ml.loader import load_emotion_model
from ml.models import load_keras_model, resolve_model
from tests.test_eval import BLUE, GREEN, RED, colour_model
from training.quantize import quantize


@pytest.fixture(scope="module")
def face_crops(
    engine: EmotionEngine, astronaut_jpeg: bytes, grace_hopper_jpeg: bytes
) -> list[np.ndarray]:
    crops = []
    for data in (astronaut_jpeg, grace_hopper_jpeg):
        pixels = decode_image(data).pixels
        crops.append(crop_face(pixels, engine.detector.detect(pixels)[0]))
    return crops


@pytest.fixture(scope="module")
def quantized_moodnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lite") / "moodnet-lite"
    result = CliRunner().invoke(app, ["quantize", "moodnet", str(out), "--name", "moodnet-lite"])
    assert result.exit_code == 0, result.output
    return out


def test_quantized_moodnet_answers_like_moodnet_in_a_quarter_of_the_file(
    quantized_moodnet: Path, face_crops: list[np.ndarray]
) -> None:
    assert {p.name for p in quantized_moodnet.iterdir()} == {
        "bundle.json",
        "model.tflite",
        "MODEL_CARD.md",
    }
    source_spec, source_file = resolve_model("moodnet")
    lite = load_emotion_model(quantized_moodnet)
    assert isinstance(lite, LiteClassifier)
    assert (lite.spec.name, lite.labels, lite.spec.input_size) == (
        "moodnet-lite",
        source_spec.labels,
        source_spec.input_size,
    )
    assert "8-bit weights" in lite.spec.description
    size = (quantized_moodnet / "model.tflite").stat().st_size
    assert size < source_file.stat().st_size / 3

    expected = load_emotion_model("moodnet").predict(face_crops)
    got = lite.predict(face_crops)
    np.testing.assert_allclose(got, expected, atol=0.02)
    assert list(got.argmax(axis=1)) == list(expected.argmax(axis=1))
    # The interpreter's tensors follow the batch size, both ways.
    np.testing.assert_allclose(lite.predict(face_crops[:1]), got[:1], atol=1e-5)
    np.testing.assert_allclose(lite.predict(face_crops), got, atol=1e-5)
    assert lite.predict([]).shape == (0, len(lite.labels))


async def test_the_engine_runs_a_quantized_bundle(
    quantized_moodnet: Path, astronaut_jpeg: bytes
) -> None:
    from ml.engine import EngineConfig

    engine = EmotionEngine.load(str(quantized_moodnet), config=EngineConfig())
    try:
        analysis = await engine.analyze(astronaut_jpeg)
    finally:
        engine.close()
    assert analysis.model == "moodnet-lite"
    (face,) = analysis.faces
    assert face.emotion == "happy"


def test_quantize_scores_the_copy_beside_its_source_on_every_val_image(tmp_path: Path) -> None:
    labels = ("angry", "happy", "sad")
    source = colour_model(tmp_path / "rgb", labels, {"angry": 0, "happy": 1, "sad": 2})
    data = tmp_path / "colours"
    for folder, colours in {"angry": [RED, RED], "happy": [GREEN], "sad": [BLUE, RED]}.items():
        (data / "val" / folder).mkdir(parents=True)
        for i, colour in enumerate(colours):
            Image.new("RGB", (8, 8), colour).save(data / "val" / folder / f"{i}.png")

    metrics = quantize(source, tmp_path / "lite", [data])

    assert set(metrics) == {"colours"}
    for side in ("quantized", "source"):
        scored = metrics["colours"][side]
        assert scored["images"] == 5
        assert scored["accuracy_all"] == pytest.approx(0.8)  # the red "sad" face reads angry
    manifest = json.loads((tmp_path / "lite" / "bundle.json").read_text())
    assert manifest["model_file"] == "model.tflite"
    assert manifest["extra"]["metrics"] == metrics
    card = (tmp_path / "lite" / "MODEL_CARD.md").read_text()
    assert "dynamic-range quantization" in card and "colours" in card


def test_a_quantized_bundle_is_refused_where_keras_is_needed(quantized_moodnet: Path) -> None:
    spec, model_file = resolve_model(quantized_moodnet)
    with pytest.raises(ModelLoadError, match="quantized LiteRT model, not a Keras model file"):
        load_keras_model(spec, model_file)
    result = CliRunner().invoke(app, ["quantize", str(quantized_moodnet), "elsewhere"])
    assert result.exit_code == 1
    assert "quantized LiteRT model" in result.output


def test_a_damaged_model_file_is_a_load_error_naming_it(
    quantized_moodnet: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text((quantized_moodnet / "bundle.json").read_text())
    (broken / "model.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ModelLoadError, match=r"broken/model\.tflite could not be loaded"):
        load_emotion_model(broken)


def test_quantize_will_not_write_over_its_source(tmp_path: Path) -> None:
    source = colour_model(tmp_path / "rgb", ("angry", "happy"), {"angry": 0, "happy": 1})
    result = CliRunner().invoke(app, ["quantize", str(source), str(source)])
    assert result.exit_code == 2
    assert "holds the source bundle" in result.output
    assert not (source / "model.tflite").exists()


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_the_interpreters_native_start_up_line_is_hidden_unless_debugging(
    level: str, shown: bool
) -> None:
    import os
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from ml.loader import load_emotion_model\n"
        "load_emotion_model('moodnet-trio').predict([np.zeros((64, 64, 3), np.uint8)])\n"
    )
    env = {**os.environ, "MOODBOT_LOG_LEVEL": level}
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert ("XNNPACK delegate" in run.stderr) is shown
