"""Distillation: teachers' answers on the training faces become part of the student's targets."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from ml.errors import ModelLoadError
from ml.models import FER_LABELS, load_emotion_model
from training.distill import blended_targets, check_teachers, teacher_probabilities
from training.train import train_compact


def _faces(n: int = 6) -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)


def test_blended_targets_mix_label_and_teacher() -> None:
    one_hot = np.eye(3, dtype=np.float32)[[0, 2]]
    teacher = np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], dtype=np.float32)
    blended = blended_targets(one_hot, teacher, 0.25)
    np.testing.assert_allclose(blended, [[0.8, 0.125, 0.075], [0.025, 0.025, 0.95]], rtol=1e-6)
    np.testing.assert_allclose(blended_targets(one_hot, teacher, 1.0), teacher)
    with pytest.raises(ValueError, match=r"within 0\.\.1, got 1\.5"):
        blended_targets(one_hot, teacher, 1.5)
    with pytest.raises(ValueError, match="do not match"):
        blended_targets(one_hot, teacher[:, :2], 0.5)


def test_teacher_columns_follow_the_students_labels() -> None:
    faces = _faces()
    shipped = load_emotion_model("moodnet").predict(list(np.repeat(faces, 3, axis=-1)))
    reordered = tuple(reversed(FER_LABELS))
    # The same teacher twice: the mean is its own answer, in the student's column order.
    taught = teacher_probabilities(["moodnet", "moodnet"], faces, reordered)
    np.testing.assert_allclose(taught, shipped[:, ::-1], atol=1e-5)
    np.testing.assert_allclose(taught.sum(axis=1), 1.0, atol=1e-4)


def test_teachers_are_checked_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not know the classes bored"):
        check_teachers(["moodnet"], ("happy", "bored"))
    with pytest.raises(ModelLoadError, match="Unknown model"):
        check_teachers([str(tmp_path / "nowhere")], FER_LABELS)
    with pytest.raises(ValueError, match="at least one teacher"):
        teacher_probabilities([], _faces(), FER_LABELS)


def test_cli_refuses_a_missing_teacher_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-bundle"
    result = CliRunner().invoke(
        app, ["train", str(tmp_path), str(tmp_path / "run"), "--teacher", str(missing)]
    )
    assert result.exit_code != 0
    assert "no-such-bundle" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_cli_refuses_a_distill_weight_without_teachers(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["train", str(tmp_path), str(tmp_path / "run"), "--distill-weight", "0.7"]
    )
    assert result.exit_code == 2
    assert "--distill-weight needs at least one --teacher" in result.output


@pytest.mark.slow
def test_a_distilled_run_records_its_teachers(
    tiny_fer: Path, tiny_recipe, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="training.train")
    recipe = tiny_recipe(teachers=("moodnet",), distill_weight=0.7)
    train_compact(tiny_fer, tmp_path / "run", recipe=recipe)
    assert re.search(r"Teachers agree with \d+\.\d% of the training labels", caplog.text)
    card = (tmp_path / "run" / "bundle" / "MODEL_CARD.md").read_text()
    settings = json.loads(card.split("## Training settings")[1].split("```json")[1].split("```")[0])
    assert settings["teachers"] == ["moodnet"] and settings["distill_weight"] == 0.7
    student = load_emotion_model(tmp_path / "run" / "bundle")
    assert student.predict(list(np.repeat(_faces(1), 3, axis=-1))).shape == (1, 7)
