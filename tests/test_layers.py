"""Test-time augmentation inside saved bundles: FlipAverage's views, and its round trip."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from ml.layers import FlipAverage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def classifier() -> keras.Model:
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [keras.Input((12, 12, 1)), keras.layers.Flatten(), keras.layers.Dense(4, "softmax")]
    )


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return np.random.default_rng(4).uniform(0, 1, (3, 12, 12, 1)).astype("float32")


def _mean_over(classifier: keras.Model, views: list[np.ndarray]) -> np.ndarray:
    outputs = [np.asarray(classifier(v)) for view in views for v in (view, view[:, :, ::-1])]
    return np.mean(outputs, axis=0)


def test_flip_average_is_the_mean_over_the_mirror(classifier, faces) -> None:
    averaged = np.asarray(FlipAverage(classifier)(faces))
    np.testing.assert_allclose(averaged, _mean_over(classifier, [faces]), rtol=1e-5)


def test_zoom_out_adds_the_shrunk_face_and_its_mirror(classifier, faces) -> None:
    padded = np.pad(faces, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    shrunk = tf.image.resize(padded, (12, 12), method="bilinear").numpy()
    averaged = np.asarray(FlipAverage(classifier, zoom_out=0.0625)(faces))
    np.testing.assert_allclose(averaged, _mean_over(classifier, [faces, shrunk]), rtol=1e-5)


def test_zoom_out_survives_saving(classifier, faces, tmp_path: Path) -> None:
    inputs = keras.Input((12, 12, 1))
    model = keras.Model(inputs, FlipAverage(classifier, zoom_out=0.1, name="flip_average")(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert loaded.get_layer("flip_average").zoom_out == 0.1
    np.testing.assert_allclose(loaded.predict(faces, verbose=0), model.predict(faces, verbose=0))


def test_zoom_out_is_validated(classifier) -> None:
    with pytest.raises(ValueError, match=r"zoom_out must be within 0\.\.0\.5, got 0\.7"):
        FlipAverage(classifier, zoom_out=0.7)
