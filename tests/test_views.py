"""`moodbot views`: a trained bundle re-wrapped with other test-time views, same weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from ml.engine import EmotionEngine
from ml.faces import crop_face
from ml.loader import load_emotion_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def face_crops(engine: EmotionEngine, astronaut: np.ndarray) -> list:
    return [crop_face(astronaut, engine.detector.detect(astronaut)[0])]


def _views(*args: str):
    return CliRunner().invoke(app, ["views", *args])


def test_flips_only_rewrap_predicts_like_the_source(tmp_path: Path, face_crops: list) -> None:
    result = _views("ml/bundles/moodnet", str(tmp_path / "same"))  # flips only by default
    assert result.exit_code == 0, result.output
    source, copy = load_emotion_model("ml/bundles/moodnet"), load_emotion_model(tmp_path / "same")
    np.testing.assert_allclose(copy.predict(face_crops), source.predict(face_crops), atol=1e-6)


def test_zoomed_views_are_scored_into_card_and_manifest(
    tmp_path: Path, face_crops: list, tiny_fer: Path
) -> None:
    out = tmp_path / "zoomed"
    result = _views(
        "ml/bundles/moodnet", str(out), "--zoom-out", "0.0625", "--val-dir", str(tiny_fer)
    )
    assert result.exit_code == 0, result.output

    model = load_emotion_model(out)
    assert model.keras_model.get_layer("flip_average").zoom_out == 0.0625
    probabilities = model.predict(face_crops)
    assert model.labels[int(probabilities[0].argmax())] == "happy"
    assert "shrunk by 6.25% of the side" in model.spec.description
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["extra"]["metrics"]["n"] == 42  # tiny_fer's readable faces
    card = (out / "MODEL_CARD.md").read_text()
    assert '"zoom_out": 0.0625' in card and "### Model card: moodnet" in card
    assert not list(out.glob(".*partial*"))


def test_a_model_without_flip_views_is_a_clear_error(tmp_path: Path) -> None:
    result = _views("mini-xception", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert "not a compact model from `moodbot train`" in result.output
    assert not (tmp_path / "x").exists()
