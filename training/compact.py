"""The compact CNN we train from scratch on small greyscale faces: the CPU-friendly default."""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from ml.layers import FlipAverage  # also registers it, so saved serving models load
from training.bundle import inference_copy

# Keras' default (0.99) lets the inference-time statistics lag far behind fast-changing
# weights: after 2 epochs at the peak learning rate, FER2013 val accuracy was 0.30 with the
# moving statistics and 0.51 with batch statistics. 0.9 tracks the weights ten times faster.
BN_MOMENTUM = 0.9


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


def _conv_bn(x, filters: int, name: str, strides: int = 1):
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = _bn(f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _residual_stage(x, filters: int, blocks: int, name: str):
    """Downsample by 2, then `blocks` residual blocks of two 3x3 convolutions."""
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    for b in range(blocks):
        shortcut = x
        if shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_{b}_proj")(x)
            shortcut = _bn(f"{name}_{b}_proj_bn")(shortcut)
        y = _conv_bn(x, filters, f"{name}_{b}_a")
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_{b}_b")(y)
        y = _bn(f"{name}_{b}_b_bn")(y)
        x = layers.Activation("relu", name=f"{name}_{b}_out")(layers.add([shortcut, y]))
    return x


def compact_cnn(
    input_size: int = 48,
    classes: int = 7,
    *,
    width: int = 32,
    blocks: tuple[int, int, int] = (1, 1, 1),
    dropout: float = 0.3,
    channels: int = 1,
) -> keras.Model:
    """A small ResNet for `input_size`² faces (1 channel grey, 3 RGB) scaled to 0..1."""
    if input_size < 24:
        raise ValueError(f"input_size must be at least 24, got {input_size!r}")
    if classes < 2:
        raise ValueError(f"classes must be at least 2, got {classes!r}")
    inputs = keras.Input((input_size, input_size, channels), name="face")
    x = _conv_bn(inputs, width, "stem_a")
    x = _conv_bn(x, width, "stem_b")
    for i, count in enumerate(blocks):
        x = _residual_stage(x, width * 2 ** (i + 1), count, f"stage{i + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="moodnet")


def classifier_from(model_file: Path) -> keras.Model:
    """The classifier inside a serving model that `with_flip_averaging` built and saved."""
    serving = keras.models.load_model(model_file, compile=False)
    try:
        return serving.get_layer("flip_average").classifier
    except ValueError:
        raise ValueError(
            f"{model_file}: not a compact model from `moodbot train` (no flip_average layer)"
        ) from None


def description(classifier: keras.Model, zoom_out: float = 0.0) -> str:
    """The bundle description of a compact classifier served with these test-time views."""
    side = classifier.input_shape[1]
    views = "the face and its mirror image"
    if zoom_out:
        views += f", and both shrunk by {zoom_out:.2%} of the side per edge"
    return (
        f"Compact residual CNN ({classifier.count_params():,} parameters) trained from scratch "
        f"on {side}x{side} greyscale faces; outputs averaged over {views}."
    )


def with_flip_averaging(classifier: keras.Model, zoom_out: float = 0.0) -> keras.Model:
    """The serving model: the classifier's average over the face and its mirror image.

    With `zoom_out`, also over both shrunk by that share of the side (see FlipAverage).
    """
    inputs = keras.Input(classifier.input_shape[1:], name="face")
    # An uncompiled copy: a compiled inner model would carry its optimiser into the bundle.
    outputs = FlipAverage(inference_copy(classifier), zoom_out=zoom_out, name="flip_average")(
        inputs
    )
    return keras.Model(inputs, outputs, name=f"{classifier.name}_tta")
