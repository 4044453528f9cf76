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
from ml.loader import load_emotion_model
from ml.models import FER_LABELS
from training.data import load_faces
from training.distill import (
    AnswersError,
    blended_targets,
    check_teachers,
    save_answers,
    teacher_probabilities,
)
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


def test_a_temperature_softens_the_teacher_only() -> None:
    one_hot = np.eye(2, dtype=np.float32)[[0]]
    teacher = np.array([[0.8, 0.2]], dtype=np.float32)
    # Logits divided by 2: the odds 4:1 become 2:1.
    np.testing.assert_allclose(blended_targets(one_hot, teacher, 1.0, 2.0), [[2 / 3, 1 / 3]])
    np.testing.assert_allclose(blended_targets(one_hot, teacher, 0.5, 2.0), [[5 / 6, 1 / 6]])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        blended_targets(one_hot, teacher, 0.5, 0.0)


def test_saved_answers_stand_in_for_their_teachers(tmp_path: Path) -> None:
    faces = _faces()
    answers = tmp_path / "answers.npz"
    save_answers(answers, teacher_probabilities(["moodnet"], faces, FER_LABELS), FER_LABELS, faces)
    assert [p.name for p in tmp_path.iterdir()] == ["answers.npz"]  # no partial file left
    reordered = tuple(reversed(FER_LABELS))
    np.testing.assert_allclose(
        teacher_probabilities([answers], faces, reordered),
        teacher_probabilities(["moodnet"], faces, reordered),
        atol=1e-3,  # stored as float16
    )
    check_teachers([answers], FER_LABELS)
    with pytest.raises(ValueError, match="does not know the classes bored"):
        check_teachers([answers], ("happy", "bored"))


def test_saved_answers_are_refused_for_other_faces(tmp_path: Path) -> None:
    faces = _faces()
    answers = tmp_path / "answers.npz"
    save_answers(answers, np.full((6, 7), 1 / 7), FER_LABELS, faces)
    with pytest.raises(AnswersError, match="computed for other faces"):
        teacher_probabilities([answers], faces[::-1], FER_LABELS)
    with pytest.raises(AnswersError, match="no such file"):
        check_teachers([tmp_path / "missing.npz"], FER_LABELS)
    (tmp_path / "junk.npz").write_text("not numpy")
    with pytest.raises(AnswersError, match=r"junk\.npz: not an answers file"):
        check_teachers([tmp_path / "junk.npz"], FER_LABELS)
    with pytest.raises(AnswersError, match=r"must end in \.npz"):
        save_answers(tmp_path / "answers.txt", np.full((6, 7), 1 / 7), FER_LABELS, faces)


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
    assert "--distill-weight and --distill-temperature need a --teacher" in result.output


def test_teach_saves_answers_that_train_accepts(tiny_fer: Path, tmp_path: Path) -> None:
    answers = tmp_path / "answers" / "moodnet.npz"
    result = CliRunner().invoke(app, ["teach", str(tiny_fer), str(answers), "--teacher", "moodnet"])
    assert result.exit_code == 0, result.output
    faces = load_faces(tiny_fer, FER_LABELS, size=48)
    assert f"{answers}: {len(faces.labels)} faces" in result.output
    np.testing.assert_allclose(
        teacher_probabilities([answers], faces.images, FER_LABELS),
        teacher_probabilities(["moodnet"], faces.images, FER_LABELS),
        atol=1e-3,
    )
    # Answers for 48-pixel faces do not fit a student that loads them at 40.
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(tiny_fer),
            str(tmp_path / "run"),
            "--teacher",
            str(answers),
            "--input-size",
            "40",
            "--epochs",
            "1",
        ],
    )
    assert result.exit_code == 2 and "computed for other faces" in result.output


@pytest.mark.slow
def test_a_distilled_run_records_its_teachers(
    tiny_fer: Path, tiny_recipe, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="training.train")
    recipe = tiny_recipe(teachers=("moodnet",), distill_weight=0.7, distill_temperature=2.0)
    train_compact(tiny_fer, tmp_path / "run", recipe=recipe)
    assert re.search(r"Teachers agree with \d+\.\d% of the training labels", caplog.text)
    card = (tmp_path / "run" / "bundle" / "MODEL_CARD.md").read_text()
    settings = json.loads(card.split("## Training settings")[1].split("```json")[1].split("```")[0])
    assert settings["teachers"] == ["moodnet"] and settings["distill_weight"] == 0.7
    assert settings["distill_temperature"] == 2.0
    student = load_emotion_model(tmp_path / "run" / "bundle")
    assert student.predict(list(np.repeat(_faces(1), 3, axis=-1))).shape == (1, 7)
