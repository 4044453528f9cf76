"""The training input pipeline: numpy jitter and the shuffled, augmented batches of every epoch."""

from __future__ import annotations

import numpy as np

from training import augment
from training.batches import AugmentedBatches


def _gradient_faces(n: int = 8, side: int = 48) -> np.ndarray:
    """Faces that brighten from left to right, so a mirror image is easy to recognise."""
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)
    return np.broadcast_to(ramp[None, None, :, None], (n, side, side, 1)).copy()


def test_jitter_keeps_shape_and_range_and_mirrors_about_half() -> None:
    faces = _gradient_faces(200)
    jittered = augment.geometric_jitter(faces, np.random.default_rng(0))
    assert jittered.shape == faces.shape and jittered.dtype == np.float32
    assert jittered.min() >= 0.0 and jittered.max() <= 1.0
    left, right = jittered[:, :, :8].mean(axis=(1, 2, 3)), jittered[:, :, -8:].mean(axis=(1, 2, 3))
    mirrored = (left > right).mean()
    assert 0.35 < mirrored < 0.65
    assert not np.allclose(jittered[0], jittered[1])


def test_jitter_is_the_identity_at_zero_strength(monkeypatch) -> None:
    for name, value in {"ROTATION": 0.0, "SHIFT": 0.0, "ZOOM": (0.0, 0.0), "CONTRAST": 0.0}.items():
        monkeypatch.setattr(augment, name, value)
    faces = np.random.default_rng(3).random((6, 48, 48, 1), dtype=np.float32)
    jittered = augment.geometric_jitter(faces, np.random.default_rng(4))
    mirrored = jittered[:, :, ::-1]
    for face, out, flipped in zip(faces, jittered, mirrored, strict=True):
        assert np.allclose(out, face, atol=1e-5) or np.allclose(flipped, face, atol=1e-5)


def test_colour_faces_move_as_one_image_each_channel_like_a_grey_one() -> None:
    faces = np.random.default_rng(6).random((5, 48, 48, 3), dtype=np.float32)
    jittered = augment.geometric_jitter(faces, np.random.default_rng(7))
    assert jittered.shape == faces.shape
    for channel in range(3):
        alone = augment.geometric_jitter(
            faces[..., channel : channel + 1], np.random.default_rng(7)
        )
        np.testing.assert_allclose(jittered[..., channel : channel + 1], alone, atol=1e-6)


def _batches(**options) -> AugmentedBatches:
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (50, 48, 48, 1), dtype=np.uint8)
    labels = np.arange(50) % 7
    weights = 1.0 + labels / 10
    targets = np.eye(7, dtype=np.float32)[labels]
    return AugmentedBatches(images, targets, weights, batch_size=16, seed=9, **options)


def test_each_epoch_serves_every_example_once_in_a_new_order() -> None:
    batches = _batches()
    assert len(batches) == 4  # 16 + 16 + 16 + 2
    first = np.concatenate([batches[i][1].argmax(axis=1) for i in range(len(batches))])
    assert sorted(first.tolist()) == sorted((np.arange(50) % 7).tolist())
    order = batches.order.copy()
    batches.on_epoch_end()
    assert batches.epoch == 1 and sorted(batches.order) == list(range(50))
    assert not np.array_equal(order, batches.order)


def test_batches_are_reproducible_and_carry_their_weights() -> None:
    one, other = _batches(erasing=0.5), _batches(erasing=0.5)
    faces, targets, weights = one[1]
    np.testing.assert_array_equal(faces, other[1][0])
    assert faces.shape == (16, 48, 48, 1) and faces.dtype == np.float32
    np.testing.assert_allclose(weights, 1.0 + targets.argmax(axis=1) / 10, rtol=1e-6)
    one.on_epoch_end()
    assert not np.array_equal(one[1][0], faces)  # fresh jitter every epoch


def test_mixed_batches_blend_labels_and_weights() -> None:
    faces, targets, weights = _batches(mixup_alpha=0.4)[0]
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(targets.max(axis=1) >= 0.5)
    assert weights.min() >= 1.0 and weights.max() <= 1.6
    assert faces.min() >= 0.0 and faces.max() <= 1.0
