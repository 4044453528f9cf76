"""Train the compact emotion CNN from scratch and write a bundle the bot loads directly."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.faces import CROP_MARGIN
from ml.models import FER_LABELS, BundleSpec
from training.averaging import averaged_model, weight_collector
from training.bundle import MODEL_FILE, ModelCard, write_bundle
from training.data import FaceArrays, class_weights, load_faces
from training.metrics import classification_report, plot_curves
from training.options import knob

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompactRecipe:
    """Every choice that shapes the compact model; written into its model card."""

    # A field made with knob() is also an option of `moodbot train` (training/options.py).
    input_size: int = knob(48, "Side of the greyscale input.")
    width: int = knob(32, "Channels of the first stage.")
    blocks: tuple[int, int, int] = (1, 1, 1)
    dropout: float = 0.3
    epochs: int = knob(60, "Training epochs at most.")
    batch_size: int = knob(64, "Faces per training step.")
    learning_rate: float = knob(3e-3, "Peak of the warm-up + cosine schedule.")
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    label_smoothing: float = knob(0.1, "Share of the target spread over the other classes.")
    # 0 = no class weights, 1 = fully balanced; in between tempers the rare classes' weight.
    class_weight_power: float = knob(0.5, "0 none, 1 fully balanced class weights.")
    patience: int = knob(12, "Early stopping patience (epochs).")
    # Regularisers that let a continued run train longer before it overfits; 0 = off.
    mixup_alpha: float = knob(0.0, "Mixup's Beta(alpha, alpha); 0 turns it off.", option="--mixup")
    erasing: float = knob(0.0, "Share of faces with a random rectangle erased.")
    # Average the weights of the last N epochs (stochastic weight averaging); 0 = off.
    average_epochs: int = knob(
        0, "Average the last N epochs' weights (SWA); kept if better on val."
    )
    # Distillation: bundles (or their saved answers) whose mean answers on the training faces
    # become part of the targets, with this share and softening (training/distill.py); no
    # teachers = plain labels.
    teachers: tuple[str, ...] = knob(
        (),
        "Distil from this bundle (name or folder) or answers file (`teach`); repeat for an "
        "ensemble.",
        option="--teacher",
    )
    distill_weight: float = knob(0.5, "Share of the teachers' answers in the targets.")
    distill_temperature: float = knob(1.0, "Soften the teachers' answers by this temperature.")
    # Stop before an epoch that would end past this many minutes, and still write the bundle
    # (a shared or rented machine's deadline); None = run every epoch.
    time_limit_minutes: float | None = knob(
        None,
        "Minutes of training epochs: stop before one would end later (loading, averaging and "
        "writing come on top); the bundle is still written.",
        option="--time-limit",
    )
    # Written into the bundle: how the bot frames photo faces for this model (BundleSpec).
    crop_margin: float = knob(
        CROP_MARGIN, "Box share the bot adds per side to frame faces like these."
    )
    val_fraction: float = 0.1
    seed: int = knob(1337, "Random seed of the split, initialisation and augmentation.",
                     envvar="MOODBOT_SEED")  # fmt: skip
    name: str = knob("moodnet", "Model name in the bundle.")

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}"
            )
        if not 0.0 <= self.class_weight_power <= 1.0:
            raise ValueError(
                f"class_weight_power must be within 0..1, got {self.class_weight_power}"
            )
        if self.mixup_alpha < 0 or not 0.0 <= self.erasing <= 1.0:
            raise ValueError(
                f"mixup_alpha must be >= 0 and erasing within 0..1, got "
                f"{self.mixup_alpha}, {self.erasing}"
            )
        if not 0 <= self.average_epochs <= self.epochs:
            raise ValueError(f"average_epochs must be within 0..epochs, got {self.average_epochs}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be within 0..1, got {self.distill_weight}")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        if self.time_limit_minutes is not None and self.time_limit_minutes <= 0:
            raise ValueError(f"time_limit_minutes must be > 0, got {self.time_limit_minutes}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be within (0, 0.5), got {self.val_fraction}")


def split_validation(data: FaceArrays, fraction: float, seed: int) -> tuple[FaceArrays, FaceArrays]:
    """A stratified split of one dataset into train and validation parts."""
    rng = np.random.default_rng(seed)
    val_index = []
    for label in np.unique(data.labels):
        members = np.flatnonzero(data.labels == label)
        rng.shuffle(members)
        val_index.extend(members[: max(1, round(len(members) * fraction))])
    is_val = np.zeros(len(data.labels), dtype=bool)
    is_val[val_index] = True

    def part(mask: np.ndarray) -> FaceArrays:
        return FaceArrays(data.images[mask], data.labels[mask], data.label_names, {})

    return part(~is_val), part(is_val)


def _targets(train: FaceArrays, recipe: CompactRecipe) -> np.ndarray:
    """One-hot labels, blended with the teachers' answers when the recipe names teachers."""
    from training.distill import blended_targets, label_agreement, teacher_probabilities

    one_hot = np.eye(len(train.label_names), dtype=np.float32)[train.labels]
    if not recipe.teachers:
        return one_hot
    teacher = teacher_probabilities(recipe.teachers, train.images, train.label_names)
    agreement, on_label = label_agreement(teacher, train.labels)
    log.info(
        "Teachers agree with %.1f%% of the training labels, %.2f mean probability on the label",
        100 * agreement,
        on_label,
    )
    return blended_targets(one_hot, teacher, recipe.distill_weight, recipe.distill_temperature)


def _datasets(train: FaceArrays, val: FaceArrays, recipe: CompactRecipe, weights: dict[int, float]):
    from training.batches import AugmentedBatches

    train_batches = AugmentedBatches(
        train.images,
        _targets(train, recipe),
        np.array([weights[int(y)] for y in train.labels], dtype=np.float32),
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        erasing=recipe.erasing,
        mixup_alpha=recipe.mixup_alpha,
    )
    val_data = (
        val.images.astype(np.float32) / 255.0,
        np.eye(len(val.label_names), dtype=np.float32)[val.labels],
    )
    return train_batches, val_data


def warmup_cosine(peak: float, warmup_steps: int, total_steps: int, alpha: float = 0.01):
    """A learning rate that warms up from peak/10 to `peak`, then decays on a cosine."""
    import keras

    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=peak,
        warmup_steps=warmup_steps,
        alpha=alpha,
    )


def _compile(model, recipe: CompactRecipe, steps_per_epoch: int) -> None:
    import keras

    schedule = warmup_cosine(
        recipe.learning_rate,
        steps_per_epoch * recipe.warmup_epochs,
        steps_per_epoch * recipe.epochs,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
        # XLA fuses the small convolution/batch-norm/ReLU chains: ~1.7x faster on this CPU.
        jit_compile=True,
    )


def _callbacks(out_dir: Path, recipe: CompactRecipe) -> list:
    import keras

    checkpoints = out_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    return [
        keras.callbacks.ModelCheckpoint(
            checkpoints / "best.keras", monitor="val_loss", save_best_only=True
        ),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=recipe.patience, restore_best_weights=True
        ),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv"), append=False),
        *([deadline(recipe.time_limit_minutes)] if recipe.time_limit_minutes else []),
    ]


def deadline(minutes: float):
    """A callback that ends training when the next epoch, at the pace so far, would overrun."""
    import keras

    class _Deadline(keras.callbacks.Callback):
        def on_train_begin(self, logs=None) -> None:
            self.start = time.monotonic()

        def on_epoch_end(self, epoch, logs=None) -> None:
            elapsed = time.monotonic() - self.start
            if elapsed * (epoch + 2) / (epoch + 1) > minutes * 60:
                log.warning(
                    "Stopping after epoch %d: another would end past the %g-minute time limit",
                    epoch + 1,
                    minutes,
                )
                self.model.stop_training = True

    return _Deadline()


def train_compact(
    train_dir: Path,
    out_dir: Path,
    *,
    val_dir: Path | None = None,
    recipe: CompactRecipe | None = None,
    init_from: Path | None = None,
) -> dict[str, Any]:
    """Train, select on validation loss, and write the bundle to out_dir/bundle."""
    import keras

    from training.compact import classifier_from, compact_cnn
    from training.distill import check_teachers

    recipe = recipe or CompactRecipe()
    check_teachers(recipe.teachers, FER_LABELS)
    keras.utils.set_random_seed(recipe.seed)
    train, val = _load(train_dir, val_dir, recipe)
    log.info("Training on %s, validating on %s", train.counts(), val.counts())
    weights = class_weights(train.labels, len(FER_LABELS), recipe.class_weight_power)
    train_batches, val_data = _datasets(train, val, recipe, weights)
    model = (
        classifier_from(init_from / MODEL_FILE)
        if init_from
        else compact_cnn(
            recipe.input_size,
            len(FER_LABELS),
            width=recipe.width,
            blocks=recipe.blocks,
            dropout=recipe.dropout,
        )
    )
    _compile(model, recipe, steps_per_epoch=int(np.ceil(len(train.labels) / recipe.batch_size)))
    out_dir.mkdir(parents=True, exist_ok=True)
    collector = weight_collector(recipe.average_epochs, recipe.epochs)
    history = model.fit(
        train_batches,
        validation_data=val_data,
        validation_batch_size=256,
        epochs=recipe.epochs,
        shuffle=False,  # the batches reshuffle themselves every epoch
        # A live progress bar at a terminal; one line per epoch in a log file.
        verbose=1 if sys.stdout.isatty() else 2,
        callbacks=[*_callbacks(out_dir, recipe), collector],
    )
    serving, metrics = _best_of(model, collector.snapshots, train, val)
    metrics["epochs_run"] = len(history.history["loss"])
    metrics["params"] = int(model.count_params())
    plot_curves(history.history, out_dir / "curves.png", title=recipe.name)
    _write(serving, out_dir, recipe, metrics, train_dir, val_dir, weights)
    return metrics


def _load(train_dir: Path, val_dir: Path | None, recipe: CompactRecipe):
    data = load_faces(train_dir, FER_LABELS, size=recipe.input_size)
    if val_dir is None:
        return split_validation(data, recipe.val_fraction, recipe.seed)
    return data, load_faces(val_dir, FER_LABELS, size=recipe.input_size)


def _best_of(model, snapshots, train: FaceArrays, val: FaceArrays):
    """The best-validation-loss model, or its weight average when that scores higher on val."""
    from training.compact import with_flip_averaging

    serving = with_flip_averaging(model)
    metrics = _evaluate(serving, val)
    metrics["selected"] = "best validation loss"
    if not snapshots:
        return serving, metrics
    averaged = with_flip_averaging(averaged_model(model, snapshots, train.images))
    averaged_metrics = _evaluate(averaged, val)
    summary = {
        "epochs_averaged": len(snapshots),
        "best_val_loss_accuracy": metrics["accuracy"],
        "averaged_accuracy": averaged_metrics["accuracy"],
    }
    if averaged_metrics["accuracy"] > metrics["accuracy"]:
        serving, metrics = averaged, averaged_metrics
        metrics["selected"] = f"average of the last {len(snapshots)} epochs"
    metrics["weight_averaging"] = summary
    return serving, metrics


def _evaluate(serving, val: FaceArrays) -> dict[str, Any]:
    probabilities = serving.predict(
        val.images.astype(np.float32) / 255.0, batch_size=256, verbose=0
    )
    report = classification_report(val.labels, probabilities.argmax(axis=1), val.label_names)
    log.info(
        "Validation (flip-averaged): accuracy %.4f, macro-F1 %.4f",
        report["accuracy"],
        report["macro_f1"],
    )
    return report


def _write(serving, out_dir, recipe, metrics, train_dir, val_dir, weights) -> Path:
    from training.compact import description

    spec = BundleSpec(
        name=recipe.name,
        labels=FER_LABELS,
        input_size=(recipe.input_size, recipe.input_size),
        color="grayscale",
        normalization="zero_to_one",
        model_file=MODEL_FILE,
        crop_margin=recipe.crop_margin,
        description=description(serving.get_layer("flip_average").classifier),
    )
    card = ModelCard(
        data=f"train: {train_dir}" + (f"; validation: {val_dir}" if val_dir else ""),
        split="given validation folder"
        if val_dir
        else f"stratified {recipe.val_fraction:.0%} of train",
        metrics=metrics,
        settings={**asdict(recipe), "class_weights": weights},
    )
    bundle = write_bundle(out_dir / "bundle", serving, spec, card)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return bundle
