"""Custom Keras layers that saved model bundles use; importing this module registers them."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="moodbot")
class FlipAverage(keras.layers.Layer):
    """Average a classifier's outputs on the image and its mirror (test-time augmentation).

    Faces are close to symmetric while a classifier's errors are not, so averaging the two
    views is a cheap, reliable accuracy gain; inside the graph it costs one extra batch.
    With `zoom_out` (a share of the side, e.g. 0.0625) the face shrunk by that much per side
    (edges repeated) and its mirror are averaged too: twice the work, measured +0.6 to +1.0
    points on FER2013 val, since training zooms out as well (see docs/TRAINING.md).
    """

    def __init__(self, classifier: keras.Model, zoom_out: float = 0.0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= zoom_out < 0.5:
            raise ValueError(f"zoom_out must be within 0..0.5, got {zoom_out!r}")
        self.classifier = classifier
        self.zoom_out = zoom_out

    def call(self, inputs):
        views = [inputs]
        if self.zoom_out:
            views.append(_zoomed_out(inputs, self.zoom_out))
        total = 0.0
        for view in views:
            total = total + self.classifier(view) + self.classifier(keras.ops.flip(view, axis=2))
        return total / (2.0 * len(views))

    def get_config(self) -> dict:
        config = super().get_config()
        config["classifier"] = keras.saving.serialize_keras_object(self.classifier)
        config["zoom_out"] = self.zoom_out
        return config

    @classmethod
    def from_config(cls, config: dict) -> FlipAverage:
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)


def _zoomed_out(images, share: float):
    """Images (N, H, W, C) shrunk by `share` of the side per edge, border pixels repeated."""
    height, width = images.shape[1], images.shape[2]
    pad = max(1, round(height * share))
    rows = keras.ops.concatenate(
        [
            keras.ops.repeat(images[:, :1], pad, axis=1),
            images,
            keras.ops.repeat(images[:, -1:], pad, axis=1),
        ],
        axis=1,
    )
    padded = keras.ops.concatenate(
        [
            keras.ops.repeat(rows[:, :, :1], pad, axis=2),
            rows,
            keras.ops.repeat(rows[:, :, -1:], pad, axis=2),
        ],
        axis=2,
    )
    return keras.ops.image.resize(padded, (height, width), interpolation="bilinear")
