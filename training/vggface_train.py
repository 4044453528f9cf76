"""The original project's recipe in Keras 3: a VGG-Face backbone and a dense head on face crops.

Seed recipe (the defaults): VGGFace2 ResNet50 without top -> avg_pool -> Flatten -> Dense 1024
relu -> Dense 512 relu (L1 0.001) -> Dense 512 relu (L2 0.001) -> softmax; Adam 1e-4,
categorical cross-entropy, batch 16, up to 300 epochs, best on validation loss, early stopping
after 30 epochs without improvement, 80/20 split. Two modes: `frozen` runs the backbone once
over every image, caches the features as `.npy` and trains the head on them (practical on a
CPU); `finetune` trains the whole network on the images, as the seed did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, regularizers
from PIL import Image
from tqdm import tqdm

from ml.models import BundleSpec, preprocess_faces
from training.aihub import class_images
from training.bundle import MODEL_FILE, ModelCard, inference_copy, write_bundle
from training.data import class_weights
from training.metrics import classification_report, plot_curves
from training.vggface import (
    build_vggface,
    normalization_for,
    resolve_weights,
)
from training.vggface_recipe import VGGFaceTrainConfig

log = logging.getLogger(__name__)

CURVES_FILE = "curves.png"
HISTORY_FILE = "history.csv"


class TrainError(Exception):
    """The VGG-Face model could not be trained."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class NotEnoughData(TrainError):
    """The dataset is too small to train on."""


@dataclass
class ImageSet:
    """Image files and their label indices."""

    files: list[Path]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class TrainResult:
    """Where the bundle went, what it scored and whether the feature cache was reused."""

    bundle: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    features_cached: bool = False


def train_vggface(
    data_dir: Path,
    output_dir: Path,
    config: VGGFaceTrainConfig | None = None,
    *,
    progress: bool = True,
) -> TrainResult:
    """Train the seed's head on a VGG-Face backbone and write a bundle the bot can load."""
    config = config or VGGFaceTrainConfig()
    # "vggface": the copy download-weights put in the cache, named in the model card.
    config = replace(config, weights=resolve_weights(config.weights, config.architecture))
    data_dir, output_dir = Path(data_dir).expanduser(), Path(output_dir).expanduser()
    work = Path(config.cache_dir or output_dir.with_name(output_dir.name + "-work")).expanduser()
    keras.utils.set_random_seed(config.seed)
    label_names, train, val = _datasets(data_dir, config)
    spec = BundleSpec(
        name=config.name,
        labels=label_names,
        input_size=(config.input_size, config.input_size),
        color="rgb",
        normalization=normalization_for(config.architecture),
        model_file=MODEL_FILE,
        description=f"VGGFace {config.architecture} backbone ({config.mode}) with the "
        "original project's dense head",
    )
    backbone = build_vggface(
        config.architecture,
        include_top=False,
        weights=config.weights,
        input_shape=(config.input_size, config.input_size, 3),
        pooling=config.pooling,
    )
    head = build_head(backbone.output_shape[1:], len(label_names))
    started = time.perf_counter()
    if config.mode == "frozen":
        model, history, probabilities, cached = _train_frozen(
            backbone, head, spec, train, val, config, work, progress
        )
    else:
        model, history, probabilities, cached = _train_finetune(
            backbone, head, spec, train, val, config, work, progress
        )
    metrics = _metrics(history, val, probabilities, label_names, time.perf_counter() - started)
    card = ModelCard(
        data=f"{data_dir}: {len(train) + len(val)} face crops ({_counts(train, val, label_names)})",
        split=_split_text(config, train, val),
        metrics=metrics,
        settings=config.to_json(),
        notes=_notes(config),
    )
    write_bundle(output_dir, model, spec, card)
    plot_curves(history, output_dir / CURVES_FILE, title=config.name)
    shutil.copyfile(work / HISTORY_FILE, output_dir / HISTORY_FILE)
    log.info("Wrote bundle %s (val accuracy %s)", output_dir, metrics.get("val_accuracy"))
    return TrainResult(output_dir, metrics, history, cached)


def build_head(feature_shape: tuple[int, ...], classes: int) -> Any:
    """The seed's classifier: Flatten -> 1024 -> 512 (L1) -> 512 (L2) -> softmax."""
    l1, l2 = regularizers.L1(0.001), regularizers.L2(0.001)
    inputs = keras.Input(shape=tuple(feature_shape), name="features")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(1024, activation="relu", name="fc1")(x)
    x = layers.Dense(512, activation="relu", kernel_regularizer=l1, name="fc2")(x)
    x = layers.Dense(512, activation="relu", kernel_regularizer=l2, name="fc3")(x)
    outputs = layers.Dense(classes, activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name="emotion_head")


# --- data ---------------------------------------------------------------------------------------


def _datasets(
    data_dir: Path, config: VGGFaceTrainConfig
) -> tuple[tuple[str, ...], ImageSet, ImageSet]:
    by_label = class_images(data_dir, config.limit_per_class)
    label_names = tuple(sorted(by_label))
    if len(label_names) < 2:
        raise NotEnoughData(f"{data_dir} needs at least two class folders with images.")
    if config.val_dir is None:
        train, val = stratified_split(by_label, label_names, config.val_split, config.seed)
    else:
        train = _image_set(by_label, label_names)
        val_by_label = class_images(Path(config.val_dir).expanduser(), None)
        unknown = sorted(set(val_by_label) - set(label_names))
        if unknown:
            log.warning("Ignoring validation classes absent from training: %s", unknown)
        val = _image_set({k: v for k, v in val_by_label.items() if k in label_names}, label_names)
    if not len(train) or not len(val):
        raise NotEnoughData(
            f"{data_dir} gives {len(train)} training and {len(val)} validation images; "
            "both must be at least one."
        )
    return label_names, train, val


def stratified_split(
    by_label: dict[str, list[Path]], label_names: tuple[str, ...], val_split: float, seed: int
) -> tuple[ImageSet, ImageSet]:
    """A seeded per-class random split; every class with two images gets one of each."""
    rng = np.random.default_rng(seed)
    parts: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}}
    for label in label_names:
        files = list(by_label[label])
        rng.shuffle(files)
        n_val = min(len(files) - 1, max(1, round(len(files) * val_split))) if len(files) > 1 else 0
        parts["val"][label], parts["train"][label] = files[:n_val], files[n_val:]
    return _image_set(parts["train"], label_names), _image_set(parts["val"], label_names)


def _image_set(by_label: dict[str, list[Path]], label_names: tuple[str, ...]) -> ImageSet:
    files = [path for label in label_names for path in by_label.get(label, [])]
    labels = [i for i, label in enumerate(label_names) for _ in by_label.get(label, [])]
    return ImageSet(files, np.asarray(labels, dtype=np.int64))


def load_batch(spec: BundleSpec, files: list[Path], flips: np.ndarray | None = None) -> np.ndarray:
    """Model-ready inputs for image files, through the same preprocessing the bot serves with."""
    crops = []
    for i, path in enumerate(files):
        with Image.open(path) as image:
            crop = np.asarray(image.convert("RGB"))
        crops.append(crop[:, ::-1] if flips is not None and flips[i] else crop)
    return preprocess_faces(spec, crops)


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels]


# --- frozen backbone: features once, then the head ----------------------------------------------


def _train_frozen(
    backbone: Any,
    head: Any,
    spec: BundleSpec,
    train: ImageSet,
    val: ImageSet,
    config: VGGFaceTrainConfig,
    work: Path,
    progress: bool,
) -> tuple[Any, dict[str, list[float]], np.ndarray, bool]:
    files = train.files + val.files
    features, cached = cached_features(backbone, spec, files, config, work, progress)
    x_train, x_val = features[: len(train)], features[len(train) :]
    classes = len(spec.labels)
    checkpoint = work / "head.best.weights.h5"
    _compile(head, config)
    fit = head.fit(
        np.asarray(x_train),
        _one_hot(train.labels, classes),
        validation_data=(np.asarray(x_val), _one_hot(val.labels, classes)),
        batch_size=config.batch_size,
        epochs=config.epochs,
        class_weight=class_weights(train.labels, classes) if config.class_weights else None,
        callbacks=_callbacks(config, checkpoint),
        shuffle=True,
        verbose=1 if progress else 0,
    )
    _restore_best(head, checkpoint)
    probabilities = head.predict(np.asarray(x_val), batch_size=256, verbose=0)
    backbone.trainable = False
    inputs = keras.Input(shape=(*spec.input_size, 3), name="face")
    outputs = inference_copy(head)(backbone(inputs))
    model = keras.Model(inputs, outputs, name=spec.name.replace("-", "_"))
    return model, fit.history, probabilities, cached


def cached_features(
    backbone: Any,
    spec: BundleSpec,
    files: list[Path],
    config: VGGFaceTrainConfig,
    work: Path,
    progress: bool,
) -> tuple[np.ndarray, bool]:
    """Backbone outputs for `files`, computed once and kept as `.npy` under `work`."""
    key = _cache_key(files, config)
    path = work / f"features-{config.architecture}-{key}.npy"
    if path.is_file():
        features = np.load(path, mmap_mode="r")
        if features.shape[0] == len(files):
            log.info("Reusing cached features %s", path)
            return features, True
        log.warning("Recomputing %s: it holds %d rows, not %d", path, features.shape[0], len(files))
    work.mkdir(parents=True, exist_ok=True)
    features = extract_features(backbone, spec, files, config.batch_size * 2, progress)
    partial = path.with_name(f".{path.name}.partial.npy")
    np.save(partial, features)
    partial.replace(path)
    (path.with_suffix(".json")).write_text(
        json.dumps({"files": [str(f) for f in files], **config.to_json()}, indent=1) + "\n"
    )
    return features, False


def extract_features(
    backbone: Any, spec: BundleSpec, files: list[Path], batch_size: int, progress: bool
) -> np.ndarray:
    """Run the backbone over image files in batches."""
    import tensorflow as tf

    forward = tf.function(lambda x: backbone(x, training=False), reduce_retracing=True)
    chunks = []
    bar = tqdm(total=len(files), desc="features", unit="img", disable=not progress)
    with bar:
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            chunks.append(np.asarray(forward(load_batch(spec, batch)), dtype=np.float32))
            bar.update(len(batch))
    return np.concatenate(chunks)


def _cache_key(files: list[Path], config: VGGFaceTrainConfig) -> str:
    """Changes whenever an image, the weights or the backbone settings change."""
    weights = Path(config.weights).expanduser() if config.weights else None
    identity = {
        "architecture": config.architecture,
        "input_size": config.input_size,
        "pooling": config.pooling,
        "weights": _file_identity(weights) if weights else f"random-{config.seed}",
        "files": [_file_identity(f) for f in files],
    }
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def _file_identity(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


# --- full fine-tuning ---------------------------------------------------------------------------


def _train_finetune(
    backbone: Any,
    head: Any,
    spec: BundleSpec,
    train: ImageSet,
    val: ImageSet,
    config: VGGFaceTrainConfig,
    work: Path,
    progress: bool,
) -> tuple[Any, dict[str, list[float]], np.ndarray, bool]:
    inputs = keras.Input(shape=(*spec.input_size, 3), name="face")
    model = keras.Model(inputs, head(backbone(inputs)), name=spec.name.replace("-", "_"))
    _compile(model, config)
    classes = len(spec.labels)
    checkpoint = work / "model.best.weights.h5"
    batches = ImageBatches(
        spec, train, config.batch_size, shuffle=True, flip=config.flip, seed=config.seed
    )
    val_batches = ImageBatches(spec, val, config.batch_size)
    fit = model.fit(
        batches,
        validation_data=val_batches,
        epochs=config.epochs,
        class_weight=class_weights(train.labels, classes) if config.class_weights else None,
        callbacks=_callbacks(config, checkpoint),
        verbose=1 if progress else 0,
    )
    _restore_best(model, checkpoint)
    probabilities = model.predict(val_batches, verbose=0)
    return inference_copy(model), fit.history, probabilities, False


class ImageBatches(keras.utils.PyDataset):
    """Batches of preprocessed images and one-hot labels, reshuffled every epoch."""

    def __init__(
        self,
        spec: BundleSpec,
        images: ImageSet,
        batch_size: int,
        *,
        shuffle: bool = False,
        flip: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.spec, self.images, self.batch_size = spec, images, batch_size
        self.shuffle, self.flip = shuffle, flip
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(images))
        self.on_epoch_end()

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        flips = self.rng.random(len(chosen)) < 0.5 if self.flip else None
        x = load_batch(self.spec, [self.images.files[i] for i in chosen], flips)
        return x, _one_hot(self.images.labels[chosen], len(self.spec.labels))

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.order)


# --- shared -------------------------------------------------------------------------------------


def _compile(model: Any, config: VGGFaceTrainConfig) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )


def _callbacks(config: VGGFaceTrainConfig, checkpoint: Path) -> list[Any]:
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.unlink(missing_ok=True)  # never restore a previous run's weights
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            checkpoint,
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience),
        keras.callbacks.CSVLogger(str(checkpoint.with_name(HISTORY_FILE))),
    ]
    if config.lr_patience > 0:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=config.lr_patience, min_lr=1e-7
            )
        )
    return callbacks


def _restore_best(model: Any, checkpoint: Path) -> None:
    """Go back to the epoch with the lowest validation loss."""
    if checkpoint.is_file():
        model.load_weights(checkpoint)
    else:  # no epoch had a finite validation loss
        log.warning("No checkpoint at %s: keeping the last epoch's weights", checkpoint)


def _metrics(
    history: dict[str, list[float]],
    val: ImageSet,
    probabilities: np.ndarray,
    label_names: tuple[str, ...],
    seconds: float,
) -> dict[str, Any]:
    report = classification_report(val.labels, probabilities.argmax(axis=1), label_names)
    losses = history.get("val_loss", [])
    best = int(np.argmin(losses)) if losses else -1
    return {
        "best_epoch": best + 1,
        "epochs_run": len(losses),
        "val_loss": round(float(losses[best]), 4) if losses else None,
        "val_n": report["n"],
        "val_accuracy": round(report["accuracy"], 4),
        "val_macro_f1": round(report["macro_f1"], 4),
        "val_per_class": report["per_class"],
        "train_seconds": round(seconds, 1),
    }


def _counts(train: ImageSet, val: ImageSet, label_names: tuple[str, ...]) -> str:
    counts = Counter(np.concatenate([train.labels, val.labels]).tolist())
    return ", ".join(f"{name} {counts[i]}" for i, name in enumerate(label_names))


def _split_text(config: VGGFaceTrainConfig, train: ImageSet, val: ImageSet) -> str:
    if config.val_dir is not None:
        return f"train {len(train)} images; validation {len(val)} images from {config.val_dir}"
    share = round(config.val_split * 100)
    return (
        f"stratified random {100 - share}/{share} split, seed {config.seed}: "
        f"{len(train)} train / {len(val)} validation"
    )


def _notes(config: VGGFaceTrainConfig) -> str:
    if not config.weights:
        return "Backbone trained from random weights (no keras-vggface weight file given)."
    weights = Path(config.weights).expanduser()
    return f"Backbone initialised from {weights.name} ({os.path.getsize(weights)} bytes)."
