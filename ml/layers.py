"""Custom Keras layers that saved model bundles use; importing this module registers them."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="moodbot")
class FlipAverage(keras.layers.Layer):
    """Average a classifier's outputs on the image and its mirror (test-time augmentation).

    Faces are close to symmetric while a classifier's errors are not, so averaging the two
    views is a cheap, reliable accuracy gain; inside the graph it costs one extra batch.
    """

    def __init__(self, classifier: keras.Model, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.classifier = classifier

    def call(self, inputs):
        mirrored = keras.ops.flip(inputs, axis=2)
        return (self.classifier(inputs) + self.classifier(mirrored)) / 2.0

    def get_config(self) -> dict:
        config = super().get_config()
        config["classifier"] = keras.saving.serialize_keras_object(self.classifier)
        return config

    @classmethod
    def from_config(cls, config: dict) -> FlipAverage:
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
