"""Mixup, random erasing and weight averaging: the regularisers of continued training runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training import augment
from training.averaging import averaged_model
from training.compact import compact_cnn
from training.train import CompactRecipe, train_compact

pytestmark = pytest.mark.slow


def _faces(n: int = 6, side: int = 48) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.2, 0.8, (n, side, side, 1)).astype("float32")


def test_erasing_changes_one_rectangle_per_chosen_face() -> None:
    faces = _faces()
    erased = augment.random_erasing(faces, 1.0, np.random.default_rng(1))
    for before, after in zip(faces, erased, strict=True):
        rows, cols = np.nonzero((before != after)[..., 0])
        assert rows.size > 0
        # Exactly the cells of one axis-aligned rectangle changed.
        assert rows.size == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        assert 0.01 * 48 * 48 <= rows.size <= 0.25 * 48 * 48
    untouched = augment.random_erasing(faces, 0.0, np.random.default_rng(1))
    np.testing.assert_array_equal(untouched, faces)


def test_mixup_blends_images_labels_and_weights_alike() -> None:
    faces = _faces(4)
    labels = np.eye(7, dtype="float32")[[0, 1, 2, 3]]
    weights = np.array([1.0, 2.0, 3.0, 4.0], "float32")
    images, mixed_labels, mixed_weights = augment.mixup(
        faces, labels, weights, 0.4, np.random.default_rng(2)
    )
    share = mixed_labels.max(axis=1)  # the example's own label keeps the larger share
    assert np.all(share >= 0.5) and np.allclose(mixed_labels.sum(axis=1), 1.0)
    partner = faces[::-1]
    expected = share[:, None, None, None] * faces + (1 - share[:, None, None, None]) * partner
    np.testing.assert_allclose(images, expected, atol=1e-5)
    np.testing.assert_allclose(mixed_weights, share * weights + (1 - share) * weights[::-1])


def test_average_of_snapshots_with_remeasured_batch_norm() -> None:
    import keras

    model = compact_cnn(48, 7, width=4)
    first = [np.array(w) for w in model.get_weights()]
    second = [w + 1.0 for w in first]
    images = (np.random.default_rng(1).uniform(0, 255, (40, 48, 48, 1))).astype(np.uint8)

    averaged = averaged_model(model, [first, second], images, batch_size=16)

    conv = averaged.get_layer("stem_a").get_weights()[0]
    np.testing.assert_allclose(conv, first[0] + 0.5, rtol=1e-6)
    # The first BN's moving mean is now the mean of its input over all images, batch-weighted.
    stem = keras.Model(averaged.input, averaged.get_layer("stem_a").output)
    batch_means = [
        np.asarray(stem(images[i : i + 16].astype("float32") / 255.0)).mean(axis=(0, 1, 2))
        for i in range(0, 40, 16)
    ]
    expected = np.mean(batch_means, axis=0)
    moving = averaged.get_layer("stem_a_bn").moving_mean.numpy()
    np.testing.assert_allclose(moving, expected, rtol=1e-4, atol=1e-6)
    assert averaged.get_layer("stem_a_bn").momentum == model.get_layer("stem_a_bn").momentum
    with pytest.raises(ValueError, match="no weights to average"):
        averaged_model(model, [], images)


def test_batch_norm_is_remeasured_on_a_fixed_sample(monkeypatch) -> None:
    from training import averaging

    model = compact_cnn(48, 7, width=4)
    snapshots = [[np.array(w) for w in model.get_weights()]]
    images = (np.random.default_rng(1).uniform(0, 255, (40, 48, 48, 1))).astype(np.uint8)

    def stem_mean() -> np.ndarray:
        averaged = averaged_model(model, snapshots, images, batch_size=64)
        return averaged.get_layer("stem_a_bn").moving_mean.numpy()

    everything = stem_mean()
    monkeypatch.setattr(averaging, "BN_SAMPLE", 8)
    sampled = stem_mean()
    np.testing.assert_array_equal(sampled, stem_mean())  # the same faces every time
    assert not np.allclose(sampled, everything, rtol=1e-4, atol=1e-6)


def test_a_regularised_run_reports_its_weight_average(
    tiny_fer: Path, tiny_recipe, tmp_path: Path
) -> None:
    recipe = tiny_recipe(epochs=2, patience=2, mixup_alpha=0.2, erasing=0.5, average_epochs=2)
    metrics = train_compact(tiny_fer, tmp_path / "run", recipe=recipe)
    summary = metrics["weight_averaging"]
    assert summary["epochs_averaged"] == 2
    candidates = (summary["best_val_loss_accuracy"], summary["averaged_accuracy"])
    assert metrics["accuracy"] == max(candidates)
    manifest = json.loads((tmp_path / "run" / "bundle" / "bundle.json").read_text())
    assert manifest["extra"]["metrics"]["weight_averaging"] == summary
    assert '"mixup_alpha": 0.2' in (tmp_path / "run" / "bundle" / "MODEL_CARD.md").read_text()


def test_regularisers_are_validated() -> None:
    with pytest.raises(ValueError, match=r"erasing within 0\.\.1"):
        CompactRecipe(erasing=1.5)
    with pytest.raises(ValueError, match=r"average_epochs must be within 0\.\.epochs"):
        CompactRecipe(epochs=3, average_epochs=4)
    with pytest.raises(ValueError, match="time_limit_minutes must be > 0"):
        CompactRecipe(time_limit_minutes=0)


def test_a_time_limit_stops_early_and_still_writes_the_bundle(
    tiny_fer: Path, tiny_recipe, tmp_path: Path, caplog
) -> None:
    # Any epoch takes longer than a microsecond: the limit ends the run after its first.
    recipe = tiny_recipe(epochs=3, patience=3, average_epochs=2, time_limit_minutes=1e-8)
    metrics = train_compact(tiny_fer, tmp_path / "run", recipe=recipe)
    assert metrics["epochs_run"] == 1
    assert "Stopping after epoch 1: another would end past the 1e-08-minute time limit" in (
        caplog.text
    )
    # The averaging epochs (2 and 3) never ran: the best checkpoint is what ships.
    assert metrics["selected"] == "best validation loss" and "weight_averaging" not in metrics
    assert (tmp_path / "run" / "bundle" / "model.keras").is_file()
