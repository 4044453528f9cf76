"""face-api.js's expression network in Keras, with its published weights: a pretrained start.

Every model of ours before this one learnt faces from FER2013 and our two small real-face sets
alone. face-api.js (MIT licence; the weights ship in its npm package and in
`@vladmandic/face-api`'s, copied to `pretrained/faceapi/`) has a small expression network that
saw colour faces of varied origin at 112x112: about 80,000 parameters, four dense blocks of
depthwise-separable convolutions, a global average and a 7-way softmax over FER's labels. It
reads 0.57 of FER2013 val without ever seeing FER2013 (docs/TRAINING.md), so its features
carry expression, and it costs a few milliseconds a face on our CPU.

The network is rebuilt here layer for layer from face-api.js's `FaceFeatureExtractor`
(`denseBlock4`) and `FaceExpressionNet`; `read_tfjs_weights` reads TensorFlow.js's weight
manifest and binary (8-bit quantized tensors dequantized) by the same names.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
from keras import layers

from training.joint_recipe import FACEAPI_SIDE as INPUT_SIDE

WEIGHTS_DIR = Path(__file__).parent / "pretrained" / "faceapi"
MANIFEST = "face_expression_model-weights_manifest.json"
# face-api.js's output order, in our label names (it says fearful, disgusted, surprised).
FACEAPI_LABELS = ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")
# face-api.js subtracts these from 0..255 RGB, then divides by 255.
MEAN_RGB = np.array([122.782, 117.001, 104.298], dtype=np.float32)
BLOCKS = 4


class WeightsError(ValueError):
    """A TensorFlow.js weight manifest or binary that cannot be read."""


def read_tfjs_weights(manifest: Path) -> dict[str, np.ndarray]:
    """Every tensor a TensorFlow.js weight manifest names, read from its binary files, as
    float32 by name. 8-bit quantized tensors are dequantized (q * scale + min)."""
    try:
        groups = json.loads(manifest.read_text())
        blobs = b"".join((manifest.parent / p).read_bytes() for g in groups for p in g["paths"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(
            f"{manifest}: not a readable TensorFlow.js weight manifest: {exc}"
        ) from exc
    tensors, offset = {}, 0
    for entry in (w for g in groups for w in g["weights"]):
        count = int(np.prod(entry["shape"]))
        quantized = entry.get("quantization")
        dtype = np.uint8 if quantized else np.float32
        size = count * np.dtype(dtype).itemsize
        if offset + size > len(blobs):
            raise WeightsError(f"{manifest}: the binary ends before {entry['name']}")
        values = np.frombuffer(blobs, dtype, count, offset).astype(np.float32)
        if quantized:
            values = values * quantized["scale"] + quantized["min"]
        tensors[entry["name"]] = values.reshape(entry["shape"])
        offset += size
    if offset != len(blobs):
        raise WeightsError(f"{manifest}: {len(blobs) - offset} bytes left after the last tensor")
    return tensors


def faceapi_trunk(
    weights: dict[str, np.ndarray] | None = None, *, channels: int = 3, name: str = "faceapi"
):
    """The feature extractor: 112x112 faces scaled to 0..1 in, 256 pooled features out.

    With `weights` (from `read_tfjs_weights`) it answers what face-api.js answers; without,
    it starts from random weights (the tests' tiny runs). `channels=1` takes grey faces and
    hands the network the grey value in R, G and B: what face-api.js answers on a grey photo."""
    faces = keras.Input((INPUT_SIDE, INPUT_SIDE, channels), name="face")
    rgb = faces if channels == 3 else layers.Concatenate(name="grey_to_rgb")([faces] * 3)
    # (x * 255 - mean) / 255 for x in 0..1: face-api.js's input, from ours.
    x = layers.Normalization(mean=MEAN_RGB / 255.0, variance=np.ones(3), name="centre")(rgb)
    for block in range(BLOCKS):
        x = _dense_block(x, f"dense{block}", weights)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(faces, features, name=name)


def _dense_block(x, name: str, weights):
    """face-api.js's denseBlock4: a strided first convolution, then three whose inputs are
    the sums of every earlier output of the block."""
    first = f"{name}/conv0"
    if name == "dense0":  # a plain convolution on the image
        conv = layers.Conv2D(32, 3, strides=2, padding="same", name=_keras_name(first))
        outputs = [layers.ReLU()(_loaded(conv, x, weights, first, ("filters", "bias")))]
    else:
        outputs = [layers.ReLU()(_separable(x, first, weights, strides=2))]
    for index in (1, 2, 3):
        sum_so_far = outputs[0] if index == 1 else layers.ReLU()(layers.add(outputs))
        outputs.append(_separable(sum_so_far, f"{name}/conv{index}", weights))
    return layers.ReLU()(layers.add(outputs))


def _separable(x, name: str, weights, strides: int = 1):
    filters = _filters(name, weights, x.shape[-1], strides)
    conv = layers.SeparableConv2D(
        filters, 3, strides=strides, padding="same", name=_keras_name(name)
    )
    return _loaded(conv, x, weights, name, ("depthwise_filter", "pointwise_filter", "bias"))


def _filters(name: str, weights, channels_in: int, strides: int) -> int:
    """Output channels: the published tensor's, or (random start) doubled at each stride."""
    if weights is not None:
        return int(weights[f"{name}/pointwise_filter"].shape[-1])
    return channels_in * 2 if strides == 2 else channels_in


def _loaded(layer, x, weights, name: str, parts: tuple[str, ...]):
    y = layer(x)
    if weights is not None:
        layer.set_weights([weights[f"{name}/{part}"] for part in parts])
    return y


def is_faceapi(model: keras.Model) -> bool:
    """Whether `model` holds this network (its first convolution, by the name given here)."""
    first = _keras_name("dense0/conv0")
    return any(layer.name == first for layer in model.layers)


def _keras_name(tfjs_name: str) -> str:
    return tfjs_name.replace("/", "_")  # Keras 3 forbids "/" in layer names


def published_weights() -> dict[str, np.ndarray]:
    """face-api.js's expression network as shipped in `pretrained/faceapi/`."""
    return read_tfjs_weights(WEIGHTS_DIR / MANIFEST)


def faceapi_head(weights: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The published 7-way softmax layer: kernel (256, 7) and bias, in FACEAPI_LABELS order."""
    return weights["fc/weights"], weights["fc/bias"]
