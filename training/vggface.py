"""The keras-vggface networks (VGG16, ResNet50, SENet50) in Keras 3, loading its published weights.

Layer names follow rcmalli/keras-vggface `models.py`, so the files of its GitHub release v2.0
(`rcmalli_vggface_tf_{,notop_}{vgg16,resnet50,senet50}.h5`) load by name. Keras 3 forbids `/` in
layer names, so `conv1/7x7_s2/bn` becomes `conv1_7x7_s2_bn` here; `rcmalli_name(layer)` gives
the original back and the weight files keep the original names.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ml.models import Normalization

log = logging.getLogger(__name__)

Architecture = Literal["vgg16", "resnet50", "senet50"]
Pooling = Literal["avg", "max"] | None
ARCHITECTURES: tuple[Architecture, ...] = ("vgg16", "resnet50", "senet50")
DEFAULT_CLASSES = {"vgg16": 2622, "resnet50": 8631, "senet50": 8631}
MIN_INPUT_SIDE = 32  # five stride-2 stages: anything smaller leaves no pixels

# Keras names of the layers whose keras-vggface names hold a `/`, with their slashes restored.
_SLASHED_NAMES = (
    (re.compile(r"^conv1_7x7_s2(_bn)?$"), lambda m: "conv1/7x7_s2" + ("/bn" if m[1] else "")),
    (
        re.compile(r"^(conv\d+_\d+_(?:1x1_reduce|3x3|1x1_increase|1x1_proj))_bn$"),
        lambda m: f"{m[1]}/bn",
    ),
    (re.compile(r"^(fc[67])_relu$"), lambda m: f"{m[1]}/relu"),
    (re.compile(r"^fc8_softmax$"), lambda m: "fc8/softmax"),
)


class VGGFaceError(Exception):
    """The VGG-Face model could not be built or loaded."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class WeightFileMissing(VGGFaceError):
    """The weight file does not exist."""


class WeightFileInvalid(VGGFaceError):
    """The weight file is not a keras-vggface weight file."""


class WeightShapeMismatch(VGGFaceError):
    """A layer's weights in the file do not fit the model."""


# --- names ------------------------------------------------------------------------------------


def keras_layer_name(rcmalli: str) -> str:
    """The Keras 3 layer name for a keras-vggface layer name (`/` is not allowed in Keras 3)."""
    return rcmalli.replace("/", "_")


def rcmalli_name(layer_or_name: Any) -> str:
    """The keras-vggface name of a layer built here (the name the weight files use)."""
    name = layer_or_name if isinstance(layer_or_name, str) else layer_or_name.name
    for pattern, original in _SLASHED_NAMES:
        match = pattern.match(name)
        if match:
            return original(match)
    return name


def weighted_layers(model: Any) -> Iterator[Any]:
    """Every layer that owns weights, looking inside nested models."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from weighted_layers(layer)
        elif layer.weights:
            yield layer


# --- preprocessing ----------------------------------------------------------------------------


def normalization_for(architecture: Architecture) -> Normalization:
    """The input normalisation the published weights of `architecture` were trained with."""
    return "vggface1" if architecture == "vgg16" else "vggface2"


# --- architectures ----------------------------------------------------------------------------


def vggface_vgg16(
    include_top: bool = True,
    weights: str | Path | None = None,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    pooling: Pooling = None,
    classes: int = 2622,
) -> Any:
    """VGGFace VGG16 (2622 identities): `conv1_1`..`conv5_3`, `pool1`..`pool5`, `fc6`..`fc8`."""
    import keras
    from keras import layers

    _check_arguments(include_top, input_shape, pooling, classes)
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    for block, (filters, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), 1):
        for index in range(1, convs + 1):
            x = layers.Conv2D(
                filters, 3, activation="relu", padding="same", name=f"conv{block}_{index}"
            )(x)
        x = layers.MaxPooling2D(2, strides=2, name=f"pool{block}")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        for name in ("fc6", "fc7"):
            x = layers.Dense(4096, name=name)(x)
            x = layers.Activation("relu", name=keras_layer_name(f"{name}/relu"))(x)
        x = layers.Dense(classes, name="fc8")(x)
        x = layers.Activation("softmax", name=keras_layer_name("fc8/softmax"))(x)
    else:
        x = _global_pool(x, pooling)
    model = keras.Model(inputs, x, name="vggface_vgg16")
    return _with_weights(model, "vgg16", include_top, weights)


def vggface_resnet50(
    include_top: bool = True,
    weights: str | Path | None = None,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    pooling: Pooling = None,
    classes: int = 8631,
) -> Any:
    """VGGFace2 ResNet50 (8631 identities): `conv1/7x7_s2`, bottlenecks, `avg_pool`, `classifier`"""
    return _resnet("resnet50", include_top, weights, input_shape, pooling, classes)


def vggface_senet50(
    include_top: bool = True,
    weights: str | Path | None = None,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    pooling: Pooling = None,
    classes: int = 8631,
) -> Any:
    """VGGFace2 SENet50: the ResNet50 layout with squeeze-excitation (`convS_B_1x1_down/up`)."""
    return _resnet("senet50", include_top, weights, input_shape, pooling, classes)


BUILDERS: dict[Architecture, Callable[..., Any]] = {
    "vgg16": vggface_vgg16,
    "resnet50": vggface_resnet50,
    "senet50": vggface_senet50,
}


def build_vggface(architecture: str, **options: Any) -> Any:
    """Build one of ARCHITECTURES by name; options as for `vggface_resnet50`."""
    if architecture not in BUILDERS:
        raise ValueError(
            f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}"
        )
    return BUILDERS[architecture](**options)  # type: ignore[index]


def _check_arguments(
    include_top: bool, input_shape: tuple[int, ...], pooling: Pooling, classes: int
) -> None:
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < MIN_INPUT_SIDE:
        raise ValueError(
            f"input_shape must be (height, width, 3) with sides >= {MIN_INPUT_SIDE}, "
            f"got {input_shape!r}"
        )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"classes must be a positive integer, got {classes!r}")


def _global_pool(x: Any, pooling: Pooling) -> Any:
    from keras import layers

    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="global_avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="global_max_pool")(x)
    return x


def _resnet(
    architecture: Architecture,
    include_top: bool,
    weights: str | Path | None,
    input_shape: tuple[int, int, int],
    pooling: Pooling,
    classes: int,
) -> Any:
    import keras
    from keras import layers

    _check_arguments(include_top, input_shape, pooling, classes)
    se = architecture == "senet50"
    # keras-vggface gives SENet's batch norms epsilon 1e-4 and ResNet's the Keras default.
    epsilon = 1e-4 if se else 1e-3
    inputs = keras.Input(shape=input_shape, name="input")
    x = layers.Conv2D(
        64, 7, strides=2, padding="same", use_bias=False, name=keras_layer_name("conv1/7x7_s2")
    )(inputs)
    x = layers.BatchNormalization(epsilon=epsilon, name=keras_layer_name("conv1/7x7_s2/bn"))(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, name="conv1_pool")(x)
    stages = ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512))
    for stage, blocks, width in stages:
        for block in range(1, blocks + 1):
            strides = 1 if stage == 2 or block > 1 else 2
            x = _bottleneck(x, stage, block, width, strides, epsilon=epsilon, se=se)
    # keras-vggface pools 7x7 (the whole map at 224x224); smaller inputs pool their whole map.
    pool = tuple(min(7, int(side)) for side in x.shape[1:3])
    x = layers.AveragePooling2D(pool, name="avg_pool")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(classes, activation="softmax", name="classifier")(x)
    else:
        x = _global_pool(x, pooling)
    model = keras.Model(inputs, x, name=f"vggface_{architecture}")
    return _with_weights(model, architecture, include_top, weights)


def _bottleneck(
    x: Any, stage: int, block: int, width: int, strides: int, *, epsilon: float, se: bool
) -> Any:
    """keras-vggface's conv block (block 1, with a projection) or identity block."""
    from keras import layers

    prefix = f"conv{stage}_{block}"

    def conv_bn(y: Any, filters: int, kernel: int, suffix: str, stride: int = 1) -> Any:
        name = f"{prefix}_{suffix}"
        y = layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=False, name=name
        )(y)
        return layers.BatchNormalization(epsilon=epsilon, name=keras_layer_name(f"{name}/bn"))(y)

    # keras-vggface strides the first 1x1 convolution, as Caffe's ResNet does.
    y = conv_bn(x, width, 1, "1x1_reduce", strides)
    y = layers.Activation("relu", name=f"{prefix}_1x1_reduce_relu")(y)
    y = conv_bn(y, width, 3, "3x3")
    y = layers.Activation("relu", name=f"{prefix}_3x3_relu")(y)
    y = conv_bn(y, width * 4, 1, "1x1_increase")
    if se:
        y = _squeeze_excite(y, prefix)
    shortcut = conv_bn(x, width * 4, 1, "1x1_proj", strides) if block == 1 else x
    y = layers.Add(name=f"{prefix}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{prefix}_relu")(y)


def _squeeze_excite(x: Any, prefix: str, ratio: int = 16) -> Any:
    """keras-vggface's SE block: its two 1x1 convolutions have biases, unlike the rest."""
    from keras import layers

    channels = int(x.shape[-1])
    s = layers.GlobalAveragePooling2D(name=f"{prefix}_se_pool")(x)
    s = layers.Reshape((1, 1, channels), name=f"{prefix}_se_reshape")(s)
    s = layers.Conv2D(channels // ratio, 1, use_bias=True, name=f"{prefix}_1x1_down")(s)
    s = layers.Activation("relu", name=f"{prefix}_1x1_down_relu")(s)
    s = layers.Conv2D(channels, 1, use_bias=True, name=f"{prefix}_1x1_up")(s)
    s = layers.Activation("sigmoid", name=f"{prefix}_1x1_up_sigmoid")(s)
    return layers.Multiply(name=f"{prefix}_se_scale")([x, s])


def _with_weights(
    model: Any, architecture: Architecture, include_top: bool, weights: str | Path | None
) -> Any:
    path = resolve_weights(weights, architecture, include_top)
    if path is not None:
        load_vggface_weights(model, path)
    return model


# --- the published weight files: names, the cache, "vggface" ----------------------------------

# The string that means "the published weights, from the cache" wherever a weight file is taken.
PUBLISHED = "vggface"
WEIGHTS_DIR_ENV = "MOODBOT_WEIGHTS_DIR"
# Where keras-vggface itself cached them (keras.utils.get_file, cache_subdir models/vggface).
KERAS_VGGFACE_CACHE = Path("~/.keras/models/vggface")


def weight_file_name(architecture: str, include_top: bool = False) -> str:
    """The published file name, e.g. `rcmalli_vggface_tf_notop_resnet50.h5`."""
    check_architecture(architecture)
    return f"rcmalli_vggface_tf_{'' if include_top else 'notop_'}{architecture}.h5"


def default_cache_dir() -> Path:
    """$MOODBOT_WEIGHTS_DIR, else $XDG_CACHE_HOME/moodbot/vggface (~/.cache by default)."""
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache_home).expanduser() / "moodbot" / "vggface"


def cached_weight_file(
    architecture: str, include_top: bool = False, cache_dir: Path | None = None
) -> Path:
    """The local copy of a published file (ours or keras-vggface's cache); never downloads."""
    name = weight_file_name(architecture, include_top)
    places = [Path(cache_dir) if cache_dir else default_cache_dir(), KERAS_VGGFACE_CACHE]
    for place in places:
        candidate = place.expanduser() / name
        if candidate.is_file():
            return candidate
    raise WeightFileMissing(
        f"Weight file {name} is not in {places[0]} (nor in {KERAS_VGGFACE_CACHE}). "
        f"Run `moodbot download-weights {architecture}"
        f"{' --include-top' if include_top else ''}` where there is internet, or copy the "
        "file there."
    )


def resolve_weights(
    weights: str | Path | None, architecture: str, include_top: bool = False
) -> Path | None:
    """The weight file `weights` names: None, "vggface" (the cached published file) or a path."""
    if weights is None or str(weights) == "":
        return None
    if str(weights) == PUBLISHED:
        return cached_weight_file(architecture, include_top)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightFileMissing(f"Weight file {path} does not exist.")
    return path


def check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}"
        )


# --- weight files in the Keras 2 HDF5 layout --------------------------------------------------


def read_weight_file(path: str | Path) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Layer name -> [(weight name, shape)] of a Keras 2 weight file, without reading values."""
    with _open_h5(path) as root:
        layers = {}
        for name in _attribute_list(root, "layer_names", path):
            group = _group(root, name, path)
            layers[name] = [
                (weight, tuple(group[weight].shape))
                for weight in _attribute_list(group, "weight_names", path)
            ]
        return layers


def load_vggface_weights(model: Any, path: str | Path, *, skip_mismatch: bool = False) -> Any:
    """Load a keras-vggface weight file into `model` by layer name (Keras 2 HDF5 layout).

    Layers of the file that the model lacks (the classifier of a full file loaded into a
    model without top) are skipped; a model layer with weights that the file lacks, or whose
    shapes differ, is an error naming the layer.
    """
    targets = {rcmalli_name(layer): layer for layer in weighted_layers(model)}
    loaded: set[str] = set()
    with _open_h5(path) as root:
        for name in _attribute_list(root, "layer_names", path):
            layer = targets.get(name)
            group = _group(root, name, path)
            weight_names = _attribute_list(group, "weight_names", path)
            if layer is None or not weight_names:
                continue
            values = [np.asarray(group[weight]) for weight in weight_names]
            if _fits(layer, values, name, path, skip_mismatch):
                layer.set_weights(values)
                loaded.add(name)
    missing = sorted(set(targets) - loaded)
    if missing and not skip_mismatch:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise WeightFileInvalid(
            f"{path} has no weights for {len(missing)} layer(s) of {model.name}: {shown}"
        )
    log.info("Loaded weights of %d layers into %s from %s", len(loaded), model.name, path)
    return model


def save_vggface_weights(model: Any, path: str | Path) -> Path:
    """Write `model`'s weights as keras-vggface published them: Keras 2 HDF5, original names."""
    import h5py
    import keras

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with h5py.File(partial, "w") as root:
        names = [rcmalli_name(layer) for layer in _flat_layers(model)]
        _write_attribute_list(root, "layer_names", names)
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = keras.__version__.encode()
        for layer in _flat_layers(model):
            name = rcmalli_name(layer)
            group = root.create_group(name)
            weight_names = [f"{name}/{weight.name}:0" for weight in layer.weights]
            _write_attribute_list(group, "weight_names", weight_names)
            for weight_name, value in zip(weight_names, layer.get_weights(), strict=True):
                group.create_dataset(weight_name, data=value)
    partial.replace(path)
    return path


def _flat_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _flat_layers(layer)
        else:
            yield layer


def _fits(layer: Any, values: list[np.ndarray], name: str, path: Any, skip: bool) -> bool:
    expected = [tuple(w.shape) for w in layer.weights]
    found = [tuple(v.shape) for v in values]
    if expected == found:
        return True
    message = f"{path}: layer {name!r} has weights of shapes {found}, the model expects {expected}"
    if skip:
        log.warning("%s; skipped", message)
        return False
    raise WeightShapeMismatch(message)


@contextmanager
def _open_h5(path: str | Path) -> Iterator[Any]:
    """Open a weight file for reading, turning every failure into a named error."""
    import h5py

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightFileMissing(f"Weight file {path} does not exist.")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise WeightFileInvalid(f"{path} is not an HDF5 weight file ({exc}).") from exc
    with handle:
        # A whole saved model keeps its weights in a `model_weights` group.
        if "layer_names" not in handle.attrs and "model_weights" in handle:
            yield handle["model_weights"]
        else:
            yield handle


def _group(root: Any, name: str, path: Any) -> Any:
    """The HDF5 group of one layer (nested where the name holds `/`, as Keras 2 wrote it)."""
    try:
        return root[name]
    except KeyError:
        raise WeightFileInvalid(f"{path} lists layer {name!r} but holds no group for it.") from None


def _attribute_list(group: Any, name: str, path: Any) -> list[str]:
    """A list attribute, joined from `name0`, `name1`, ... when Keras had to split it."""
    if name in group.attrs:
        raw = list(group.attrs[name])
    else:
        raw, index = [], 0
        while f"{name}{index}" in group.attrs:
            raw.extend(group.attrs[f"{name}{index}"])
            index += 1
        if not index:
            raise WeightFileInvalid(
                f"{path} is not in the Keras 2 weight layout: {group.name} has no {name!r}."
            )
    return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in raw]


_HDF5_ATTRIBUTE_LIMIT = 64512  # bytes an HDF5 object header holds; Keras 2 split longer lists


def _write_attribute_list(group: Any, name: str, items: list[str]) -> None:
    data = np.array([item.encode("utf-8") for item in items])
    chunks = 1
    while data.nbytes / chunks > _HDF5_ATTRIBUTE_LIMIT:
        chunks += 1
    if chunks == 1:
        group.attrs[name] = data
        return
    for index, part in enumerate(np.array_split(data, chunks)):
        group.attrs[f"{name}{index}"] = part
