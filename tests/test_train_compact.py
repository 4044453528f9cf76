"""The compact model's trainer: a tiny run end to end, into a bundle the bot loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml.loader import load_emotion_model
from ml.models import FER_LABELS
from training.data import FaceArrays, class_weights, load_faces
from training.train import CompactRecipe, split_validation, train_compact

pytestmark = pytest.mark.slow


def test_load_faces_reports_unreadable_files(tiny_fer: Path) -> None:
    data = load_faces(tiny_fer, FER_LABELS, size=48)
    assert data.images.shape == (42, 48, 48, 1)
    assert data.counts() == {label: 6 for label in FER_LABELS}
    assert list(data.skipped) == [str(tiny_fer / "happy" / "broken.png")]


def test_class_weights_temper_rare_classes() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    full, tempered = class_weights(labels, 2, 1.0), class_weights(labels, 2, 0.5)
    assert full[1] / full[0] == pytest.approx(9.0)
    assert tempered[1] / tempered[0] == pytest.approx(3.0)
    mean = (90 * tempered[0] + 10 * tempered[1]) / 100
    assert mean == pytest.approx(1.0)
    # The VGG-Face recipe's default: fully balanced, no class left out.
    assert class_weights(np.array([0, 0, 0, 1]), 2) == {0: pytest.approx(2 / 3), 1: 2.0}
    assert class_weights(np.array([0, 0, 2]), 3)[1] == 0.0


def test_split_is_stratified_and_disjoint() -> None:
    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
    data = FaceArrays(images, np.array([0] * 80 + [1] * 20), ("a", "b"), {})
    train, val = split_validation(data, 0.1, seed=1)
    assert val.counts() == {"a": 8, "b": 2} and train.counts() == {"a": 72, "b": 18}
    assert not set(train.images.ravel()) & set(val.images.ravel())


def test_one_epoch_makes_a_loadable_bundle(tiny_fer: Path, tiny_recipe, tmp_path: Path) -> None:
    metrics = train_compact(tiny_fer, tmp_path / "run", recipe=tiny_recipe())
    bundle = tmp_path / "run" / "bundle"
    assert sorted(p.name for p in bundle.iterdir()) == [
        "MODEL_CARD.md",
        "bundle.json",
        "model.keras",
    ]
    assert (tmp_path / "run" / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert metrics["n"] == 7 and metrics["epochs_run"] == 1
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["extra"]["metrics"]["accuracy"] == metrics["accuracy"]
    assert "moodbot" in (bundle / "MODEL_CARD.md").read_text()

    model = load_emotion_model(bundle)
    assert model.labels == FER_LABELS and model.spec.input_size == (48, 48)
    probabilities = model.predict([np.full((120, 120, 3), 128, np.uint8)])
    assert probabilities.shape == (1, 7)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)


def test_recipe_is_validated() -> None:
    with pytest.raises(ValueError, match=r"class_weight_power must be within 0\.\.1, got 2"):
        CompactRecipe(class_weight_power=2)
