"""Train one model on several face datasets whose label sets differ.

FER2013 and SFEW label angry, disgust, fear, happy, sad, surprise and neutral; the AIHub Korean
faces label happy, sad, angry, anxious, hurt and embarrassed. The model answers over the union
of all of them. Each face's loss is a softmax restricted to the labels *its* dataset uses
(`restricted_crossentropy`): a Korean face labelled sad is never taught "not neutral" (AIHub has
no neutral folder, so its faces say nothing about neutral), and a FER face is never taught
"not anxious". A plain softmax over the union does teach exactly that, and so ties labels to
the face's origin. But the restricted loss alone never separates labels that no dataset holds
together (fear and anxious, surprise and embarrassed): nothing stops a FER fear face from being
answered anxious. `union_weight` blends the two: 0 is purely restricted, 1 a plain softmax over
the union. The choices are measured against each other in docs/TRAINING.md ("Real faces").

Targets travel to the loss as one row per face: the target distribution over the union
followed by the 0/1 mask of the labels its dataset uses.

Every epoch draws a fixed number of faces from each dataset (a small dataset is repeated, a
large one sampled), so a 700-face film set is not drowned by 28,709 FER faces. After every
epoch the model is scored on each dataset's held-out faces, every image counted (a label the
dataset does not use counts as wrong), and the epoch with the best accuracy over all their
images is kept (or the best mean of their accuracies, `--select mean`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ml.faces import CROP_MARGIN
from ml.models import BundleSpec
from training.averaging import set_average, weight_collector
from training.batches import AugmentedBatches
from training.bundle import MODEL_FILE, ModelCard, write_bundle
from training.data import FaceArrays, load_faces
from training.joint_recipe import UNION_LABELS, JointRecipe
from training.metrics import classification_report
from training.train import deadline, warmup_cosine

log = logging.getLogger(__name__)

# A new label's output starts as a copy of its nearest FER label's, so fine-tuning begins from
# sensible answers instead of noise, but a logit lower: an exact copy ties with its twin, and
# since no dataset labels both (no face says "fear, not anxious"), the tie never resolves for
# FER faces (a first CPU run answered every FER surprise face "embarrassed").
WARM_START = {"anxious": "fear", "hurt": "sad", "embarrassed": "surprise"}
WARM_START_OFFSET = -1.0
# PIL's "L" conversion: L = 0.299 R + 0.587 G + 0.114 B.
GREY_FROM_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)
BACKBONE_NAMES = {
    "compact": "Compact residual CNN",
    "faceapi": "face-api.js's dense depthwise-separable CNN",
}


@dataclass(frozen=True)
class Bundled:
    """A compact bundle's classifier (mirror averaging unwrapped) and the labels it answers."""

    classifier: keras.Model
    labels: tuple[str, ...]
    weights_file: Path | None = None  # where the classifier was read from, to key its answers

    def answers(self, images: np.ndarray) -> np.ndarray:
        """Its flip-averaged answers on `images`, placed in the union's columns."""
        return on_union(flip_averaged(keras_predict(self.classifier), images), self.labels)

    def cached_answers(self, images: np.ndarray, cache_dir: Path | None) -> np.ndarray:
        """`answers`, kept in `cache_dir` under its weights' and the images' digests: a later
        run with the same teacher and faces reads them back instead of paying the teacher
        again (minutes a network at 48 px on the 2-core CPU)."""
        if cache_dir is None or self.weights_file is None:
            return self.answers(images)
        from training.distill import fingerprint, save_answers, saved_answers

        digest = hashlib.sha256(str(self.classifier.input_shape).encode())
        digest.update(self.weights_file.read_bytes())
        path = cache_dir / f"{digest.hexdigest()[:16]}-{fingerprint(images)[:16]}.npz"
        if path.is_file():
            log.info("Teacher answers read from %s", path)
            return saved_answers(path, images, UNION_LABELS)
        save_answers(path, self.answers(images), UNION_LABELS, images)
        # Read back, so that the first run learns from the same (float16) answers as the rest.
        return saved_answers(path, images, UNION_LABELS)


@dataclass(frozen=True)
class Teacher:
    """Whose answers `--distill` blends in: one bundle, or a weighted mean of several.

    An ensemble teaches better than any of its members but costs their sum at every photo;
    distilled into one network, the bot pays for one. Each member reads the training faces at
    the side it was trained on (`_train_faces_for`)."""

    members: tuple[Bundled, ...]
    weights: tuple[float, ...]
    cache_dir: Path | None = None  # see Bundled.cached_answers

    def __post_init__(self) -> None:
        if not self.members or len(self.weights) != len(self.members):
            raise ValueError(
                f"{len(self.members)} teachers and {len(self.weights)} weights: give one each"
            )
        if any(w < 0 for w in self.weights) or not sum(self.weights) > 0:
            raise ValueError(f"teacher weights must be >= 0 and not all 0, got {self.weights}")

    def answers(self, data: Dataset, recipe: JointRecipe) -> np.ndarray:
        """The weighted mean of the members' answers on `data`'s training faces."""
        total = sum(self.weights)
        return sum(
            (w / total)
            * member.cached_answers(_train_faces_for(member, data, recipe), self.cache_dir)
            for member, w in zip(self.members, self.weights, strict=True)
        )


@dataclass(frozen=True)
class Dataset:
    """One dataset folder (train/ and val/ with a folder per class) loaded into memory."""

    name: str
    train: FaceArrays
    val: FaceArrays
    root: Path | None = None  # where it was loaded from, to load it again at another side

    @property
    def labels(self) -> tuple[str, ...]:
        return self.train.label_names


def load_dataset(root: Path, recipe: JointRecipe, *, with_train: bool = True) -> Dataset:
    """root/train/<class>/ and root/val/<class>/; the classes are the union labels present.

    `with_train=False` leaves the training faces out (none loaded), for scoring only."""
    from training.aihub import DatasetError

    present = tuple(label for label in UNION_LABELS if (root / "train" / label).is_dir())
    unknown = sorted(
        p.name for p in (root / "train").glob("*") if p.is_dir() and p.name not in UNION_LABELS
    )
    if not present:
        raise DatasetError(f"{root}/train has none of the class folders {', '.join(UNION_LABELS)}")
    if unknown:
        raise DatasetError(f"{root}/train has class folders the model cannot learn: {unknown}")
    load = dict(size=recipe.input_size, color=recipe.color)
    val = load_faces(root / "val", present, **load)
    train = load_faces(root / "train", present, **load) if with_train else val.none()
    return Dataset(root.name, train, val, root)


def label_mask(labels: Sequence[str], union: Sequence[str] = UNION_LABELS) -> np.ndarray:
    return np.array([name in labels for name in union], dtype=np.float32)


def joint_targets(
    data: FaceArrays,
    smoothing: float,
    union: Sequence[str] = UNION_LABELS,
    *,
    teacher: np.ndarray | None = None,
    teacher_share: float = 0.0,
) -> np.ndarray:
    """Rows of [target distribution over the union | mask of the labels its dataset uses].

    With `teacher` (its answers over the union, one row per face), `teacher_share` of each
    target is the teacher's answer renormalised over the dataset's labels (distillation).
    """
    mask = label_mask(data.label_names, union)
    columns = np.array([list(union).index(name) for name in data.label_names])
    one_hot = np.zeros((len(data.labels), len(union)), dtype=np.float32)
    one_hot[np.arange(len(data.labels)), columns[data.labels]] = 1.0
    target = (1 - smoothing) * one_hot + smoothing * mask / mask.sum()
    if teacher is not None and teacher_share > 0:
        taught = teacher * mask
        taught /= np.maximum(taught.sum(axis=1, keepdims=True), 1e-7)
        target = (1 - teacher_share) * target + teacher_share * taught
    return np.concatenate([target, np.broadcast_to(mask, one_hot.shape)], axis=1)


def restricted_crossentropy(union_weight: float = 0.0):
    """The loss: cross-entropy of the softmax renormalised over each row's masked labels.

    With `union_weight` w it is (1 - w) of that plus w of the plain cross-entropy over every
    label: -sum(t * (log p - (1 - w) * log sum_mask p)).
    """
    from keras import ops

    def loss(y_true, y_pred):
        classes = y_pred.shape[-1]
        target, mask = y_true[..., :classes], y_true[..., classes:]
        probabilities = ops.clip(y_pred, 1e-7, 1.0)
        log_norm = ops.log(ops.sum(probabilities * mask, axis=-1, keepdims=True))
        return -ops.sum(target * (ops.log(probabilities) - (1 - union_weight) * log_norm), axis=-1)

    return loss


class MixedBatches(AugmentedBatches):
    """Augmented batches that draw a fixed number of faces from each dataset every epoch."""

    def __init__(self, pools: Sequence[np.ndarray], draws: Sequence[int], **kwargs: Any) -> None:
        self.pools, self.draws = list(pools), list(draws)
        super().__init__(**kwargs)

    def _shuffled(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        chosen = [_draw(pool, n, rng) for pool, n in zip(self.pools, self.draws, strict=True)]
        return rng.permutation(np.concatenate(chosen))

    def __len__(self) -> int:
        return -(-sum(self.draws) // self.batch_size)


def _draw(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` members of `pool`: every member as often as fits, the rest sampled."""
    whole, rest = divmod(count, len(pool))
    return np.concatenate([np.tile(pool, whole), rng.choice(pool, rest, replace=False)])


def build_batches(
    datasets: Sequence[Dataset], recipe: JointRecipe, teacher: Teacher | None = None
) -> MixedBatches:
    images = np.concatenate([d.train.images for d in datasets])
    targets = np.concatenate([_targets(d, recipe, teacher) for d in datasets])
    starts = np.cumsum([0, *(len(d.train.labels) for d in datasets)])
    pools = [np.arange(a, b) for a, b in itertools.pairwise(starts)]
    draws = [recipe.per_epoch.get(d.name, len(d.train.labels)) for d in datasets]
    return MixedBatches(
        pools,
        draws,
        images=images,
        targets=targets,
        sample_weight=np.ones(len(images), dtype=np.float32),
        batch_size=recipe.batch_size,
        seed=recipe.seed,
        erasing=recipe.erasing,
    )


def _targets(data: Dataset, recipe: JointRecipe, teacher: Teacher | None) -> np.ndarray:
    share = recipe.distill.get(data.name, 0.0)
    if not share:
        return joint_targets(data.train, recipe.label_smoothing)
    if teacher is None:
        raise ValueError("--distill needs a teacher: --teacher or --init-from")
    log.info("%s: distilling %.0f%% of each target from the teacher", data.name, 100 * share)
    return joint_targets(
        data.train,
        recipe.label_smoothing,
        teacher=teacher.answers(data, recipe),
        teacher_share=share,
    )


def _train_faces_for(teacher: Bundled, data: Dataset, recipe: JointRecipe) -> np.ndarray:
    """`data`'s training faces at the teacher's own side: a 48 px teacher answers a 56 px
    run's faces as it was trained to (loaded again from the files: resizing the loaded 56 px
    faces back down blurs them, and moodnet's FER2013 val falls from 0.707 to 0.695)."""
    side = teacher.classifier.input_shape[1]
    if side == recipe.input_size or data.root is None:
        return data.train.images
    log.info("%s: loading the training faces again at the teacher's %d px", data.name, side)
    again = load_faces(data.root / "train", data.labels, size=side, color=recipe.color)
    if again.files != data.train.files:
        raise ValueError(f"{data.root}/train changed since it was loaded")
    return again.images


def on_union(
    answers: np.ndarray, labels: Sequence[str], union: Sequence[str] = UNION_LABELS
) -> np.ndarray:
    """Answers over `labels` placed in the union's columns (zero for labels it lacks)."""
    placed = np.zeros((len(answers), len(union)), dtype=np.float32)
    placed[:, [list(union).index(name) for name in labels]] = answers
    return placed


# --- the model --------------------------------------------------------------------------------


def union_head_model(init: Bundled | None, recipe: JointRecipe):
    """The recipe's network with a softmax over the union: from `init` (a bundle's classifier
    for the recipe's input, see `bundled`), or new (the faceapi backbone: pretrained).

    Each union label's output is copied from the starting model's output of the same name; a
    label it lacks starts from its WARM_START twin, a logit lower."""
    from keras import layers

    from training.compact import compact_cnn

    if init is not None:
        net = init.classifier
        trunk = keras.Model(net.input, net.get_layer("dropout").output)
        kernel, bias = net.get_layer("emotion").get_weights()
        return _with_union_head(trunk, (kernel, bias), init.labels, recipe.name)
    if recipe.backbone == "faceapi":
        from training.faceapi import FACEAPI_LABELS, faceapi_head, faceapi_trunk, published_weights

        weights = published_weights()
        trunk = faceapi_trunk(weights, channels=1 if recipe.color == "grayscale" else 3)
        trunk = keras.Model(trunk.input, layers.Dropout(0.3, name="dropout")(trunk.output))
        return _with_union_head(trunk, faceapi_head(weights), FACEAPI_LABELS, recipe.name)
    return compact_cnn(
        recipe.input_size,
        len(UNION_LABELS),
        width=recipe.width,
        channels=1 if recipe.color == "grayscale" else 3,
    )


def _with_union_head(trunk: keras.Model, head_weights, labels: Sequence[str], name: str):
    """`trunk` with a softmax over UNION_LABELS started from `head_weights` (kernel, bias)
    whose outputs are `labels`."""
    from keras import layers

    unstartable = sorted(set(UNION_LABELS) - set(labels) - set(WARM_START))
    if unstartable:
        raise ValueError(f"cannot start from a model that lacks {unstartable}: no twin to copy")
    head = layers.Dense(len(UNION_LABELS), activation="softmax", name="emotion")
    model = keras.Model(trunk.input, head(trunk.output), name=name)
    kernel, bias = head_weights
    copied = [name if name in labels else WARM_START[name] for name in UNION_LABELS]
    source = [list(labels).index(name) for name in copied]
    offset = np.array([0.0 if n in labels else WARM_START_OFFSET for n in UNION_LABELS])
    head.set_weights([kernel[:, source], bias[source] + offset])
    return model


def adapted(old: keras.Model, recipe: JointRecipe) -> keras.Model:
    """`old` for the recipe's input side and colour: the same weights, a new input.

    The network is convolutional up to a global average, so every weight fits any side. For
    colour, the first convolution's grey kernel is spread over R, G and B by the weights of
    the grey conversion itself (ITU-R 601-2, what PIL's "L" uses): the colour model starts
    out answering exactly what the grey one answers, and fine-tuning can learn to use colour.
    """
    from training.compact import compact_cnn

    side, channels = old.input_shape[1], old.input_shape[-1]
    new_channels = 1 if recipe.color == "grayscale" else 3
    if (side, channels) == (recipe.input_size, new_channels):
        return old
    if channels != 1 and new_channels != channels:
        raise ValueError(f"cannot turn a {channels}-channel model into a {recipe.color} one")
    stem = old.get_layer("stem_a").get_weights()[0]
    model = compact_cnn(
        recipe.input_size,
        old.output_shape[-1],
        width=stem.shape[-1],
        blocks=_blocks(old),
        dropout=old.get_layer("dropout").rate,
        channels=new_channels,
    )
    for layer in (layer for layer in model.layers if layer.weights):  # all named
        weights = old.get_layer(layer.name).get_weights()
        if layer.name == "stem_a" and new_channels != channels:
            weights = [weights[0] * GREY_FROM_RGB[:, None]]
        layer.set_weights(weights)
    return model


def _blocks(model: keras.Model) -> tuple[int, ...]:
    """Residual blocks per stage of a compact CNN, from its layer names (stageS_B_a)."""
    names = [layer.name for layer in model.layers]
    stages = sorted({n.split("_")[0] for n in names if n.startswith("stage")})
    return tuple(sum(n.startswith(f"{s}_") and n.endswith("_a") for n in names) for s in stages)


def _compile(model, recipe: JointRecipe, steps_per_epoch: int) -> None:
    schedule = warmup_cosine(
        recipe.learning_rate,
        int(steps_per_epoch * recipe.warmup_epochs),
        steps_per_epoch * recipe.epochs,
        alpha=0.02,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay),
        loss=restricted_crossentropy(recipe.union_weight),
        jit_compile=not _has_separable_convolutions(model),
    )


def _has_separable_convolutions(model: keras.Model) -> bool:
    """XLA on our CPU runs depthwise-separable convolutions 15 times slower than TensorFlow's
    own kernels (the faceapi backbone: 4.35 s against 0.29 s a training step of 64 faces);
    so a network with them is not compiled with XLA. The compact CNN always trained with it."""
    return any(isinstance(layer, keras.layers.SeparableConv2D) for layer in model.layers)


# --- scoring ----------------------------------------------------------------------------------


def flip_averaged(predict, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Mean answers over the faces and their mirror images (what the served model does)."""
    faces = images.astype(np.float32) / 255.0
    return (predict(faces, batch_size) + predict(faces[:, :, ::-1], batch_size)) / 2


def score_dataset(
    probabilities: np.ndarray, data: FaceArrays, answer_labels: Sequence[str] = UNION_LABELS
) -> dict[str, Any]:
    """Accuracy over every image: the answer is the top label among everything the model knows.

    Also reports the accuracy when the answer is taken among the dataset's own labels, and
    how often the answer is a label this dataset never uses ("foreign"): for FER
    faces an AIHub-only label such as anxious, for Korean faces a FER-only one such as
    neutral. A high rate there would mean the label follows the face's origin.
    """
    answers = [answer_labels[i] for i in probabilities.argmax(axis=1)]
    truth = [data.label_names[i] for i in data.labels]
    names = tuple(dict.fromkeys([*data.label_names, *answer_labels]))
    report = classification_report(
        np.array([names.index(t) for t in truth]),
        np.array([names.index(a) for a in answers]),
        names,
    )
    report["per_class"] = {k: v for k, v in report["per_class"].items() if k in data.label_names}
    f1s = [report["per_class"][k]["f1"] for k in data.label_names]
    report["macro_f1"] = round(float(np.mean(f1s)), 4)
    # The answer taken among the dataset's own labels only: what the features can tell apart,
    # apart from how often the label prior pulls the answer outside (foreign answers).
    own = probabilities * label_mask(data.label_names, answer_labels)
    own_answers = [answer_labels[i] for i in own.argmax(axis=1)]
    report["own_labels_accuracy"] = round(
        float(np.mean([a == t for a, t in zip(own_answers, truth, strict=True)])), 4
    )
    foreign = [a for a in answers if a not in data.label_names]
    report["foreign_answers"] = {
        "share": round(len(foreign) / max(1, len(answers)), 4),
        "by_label": {k: foreign.count(k) for k in sorted(set(foreign))},
    }
    return report


def score_all(predict, datasets: Sequence[Dataset]) -> dict[str, Any]:
    """Each dataset's report, their mean accuracy, and the accuracy over all their images."""
    return with_totals(
        {d.name: score_dataset(flip_averaged(predict, d.val.images), d.val) for d in datasets}
    )


def with_totals(scores: dict[str, Any]) -> dict[str, Any]:
    """Datasets' reports ({"accuracy", "n", ...} each) with their mean and pooled accuracy."""
    reports = list(scores.values())
    right = sum(s["accuracy"] * s["n"] for s in reports)
    return {
        **scores,
        "mean_accuracy": round(float(np.mean([s["accuracy"] for s in reports])), 4),
        "pooled_accuracy": round(float(right / max(1, sum(s["n"] for s in reports))), 4),
    }


def rank(scores: dict[str, Any], floors: dict[str, float], by: str) -> tuple[bool, float]:
    """What selection maximises: every floor (dataset -> val accuracy) met first, then the
    `by` accuracy ("mean" or "pooled") of `score_all`/`with_totals` scores."""
    floors_met = all(scores[name]["accuracy"] >= v for name, v in floors.items())
    return floors_met, scores[f"{by}_accuracy"]


def keras_predict(model):
    return lambda x, batch: model.predict(x, batch_size=batch, verbose=0)


class SelectBest(keras.callbacks.Callback):
    """After every epoch: score each dataset's val faces, log them, keep the best weights.

    Best: an epoch that reaches every floor (dataset name -> val accuracy) beats one that
    does not; then the higher `by` wins: "mean" (of the datasets' accuracies) or "pooled"
    (over all their images, so a 145-face val cannot outvote 4,948 faces).
    """

    def __init__(
        self,
        datasets: Sequence[Dataset],
        out_dir: Path,
        floors: dict[str, float] | None = None,
        by: str = "pooled",
    ) -> None:
        super().__init__()
        self.datasets, self.log_file = datasets, out_dir / "epochs.jsonl"
        self.floors, self.by = floors or {}, by
        self.best: dict[str, Any] = {}
        self.best_weights: list[np.ndarray] = []
        self.best_epoch = 0

    def rank(self, scores: dict[str, Any]) -> tuple[bool, float]:
        return rank(scores, self.floors, self.by)

    def on_epoch_end(self, epoch, logs=None) -> None:
        scores = score_all(keras_predict(self.model), self.datasets)
        loss = (logs or {}).get("loss", float("nan"))
        row = {"epoch": epoch + 1, "loss": loss}
        row.update({d.name: scores[d.name]["accuracy"] for d in self.datasets})
        for d in self.datasets:
            row[f"{d.name}_own"] = scores[d.name]["own_labels_accuracy"]
            row[f"{d.name}_foreign"] = scores[d.name]["foreign_answers"]["share"]
        row["mean"], row["pooled"] = scores["mean_accuracy"], scores["pooled_accuracy"]
        row["floors_met"] = self.rank(scores)[0]
        log.info("epoch %d: %s", epoch + 1, row)
        with self.log_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if not self.best or self.rank(scores) > self.rank(self.best):
            self.best, self.best_epoch = scores, epoch + 1
            self.best_weights = self.model.get_weights()


# --- the command ------------------------------------------------------------------------------


def train_joint(
    data_dirs: Sequence[Path],
    out_dir: Path,
    *,
    recipe: JointRecipe | None = None,
    init_from: Path | None = None,
    teachers: Sequence[tuple[Path, float]] = (),
    teacher_cache: Path | None = None,
) -> dict[str, Any]:
    """Train over every dataset folder, select on their val faces, write out_dir/bundle.

    `teachers` (bundle, weight) answer the faces that `recipe.distill` names, their answers
    averaged by weight (default: `init_from` alone), and kept in `teacher_cache` if given."""
    recipe = recipe or JointRecipe()
    keras.utils.set_random_seed(recipe.seed)
    datasets = [load_dataset(d, recipe) for d in data_dirs]
    for d in datasets:
        log.info("%s: train %s, val %s", d.name, d.train.counts(), d.val.counts())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "epochs.jsonl").unlink(missing_ok=True)
    check_dataset_names(recipe, [d.name for d in datasets])
    init = bundled(init_from, recipe)
    teacher = _teacher(teachers, recipe, init, teacher_cache)
    batches = build_batches(datasets, recipe, teacher=teacher)
    model = union_head_model(init, recipe)
    _compile(model, recipe, steps_per_epoch=len(batches))
    select = SelectBest(datasets, out_dir, recipe.floor, recipe.select_by)
    collector = weight_collector(recipe.average_epochs, recipe.epochs)
    minutes = recipe.time_limit_minutes
    callbacks = [select, collector, *([deadline(minutes)] if minutes else [])]
    history = model.fit(
        batches, epochs=recipe.epochs, shuffle=False, verbose=2, callbacks=callbacks
    )
    model.set_weights(select.best_weights)
    metrics = {**select.best, "selected": f"epoch {select.best_epoch}"}
    metrics["selected_epoch"] = select.best_epoch
    if collector.snapshots:
        metrics = _better_of_average(model, metrics, collector.snapshots, batches, select)
    metrics["floors_met"] = select.rank(metrics)[0]
    metrics["epochs_run"] = len(history.history["loss"])
    _write(model, out_dir, recipe, metrics, data_dirs, init_from, teachers)
    return metrics


def _better_of_average(model, metrics, snapshots, batches: MixedBatches, select):
    """The selected epoch's model, or the average of the last epochs when it ranks higher.

    Batch-norm statistics of the average are measured over the training faces of every
    dataset (`set_average` samples at most BN_SAMPLE of them). The model is changed in place
    (a clone would need the custom loss registered)."""
    datasets = select.datasets
    selected_weights = model.get_weights()
    set_average(model, snapshots, batches.images)
    scores = score_all(keras_predict(model), datasets)
    summary = {
        "epochs_averaged": len(snapshots),
        "selected_epoch": {d.name: metrics[d.name]["accuracy"] for d in datasets},
        "averaged": {d.name: scores[d.name]["accuracy"] for d in datasets},
    }
    log.info("weight averaging: %s", summary)
    if select.rank(scores) > select.rank(metrics):
        metrics = {**scores, "selected": f"average of the last {len(snapshots)} epochs"}
        metrics["selected_epoch"] = None
    else:
        model.set_weights(selected_weights)
    metrics["weight_averaging"] = summary
    return metrics


def check_dataset_names(recipe: JointRecipe, names: Sequence[str]) -> None:
    """Refuse a per-dataset option naming no given dataset (a typo would silently do nothing)."""
    refuse_unknown_datasets(
        names,
        {"--per-epoch": recipe.per_epoch, "--distill": recipe.distill, "--floor": recipe.floor},
    )


def refuse_unknown_datasets(names: Sequence[str], options: dict[str, Any]) -> None:
    """`options`: option -> its values by dataset name; each name must be one of `names`."""
    for option, values in options.items():
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"{option} names datasets that are not given: {unknown}")


def bundled(bundle: Path | None, recipe: JointRecipe, *, adapt: bool = True) -> Bundled | None:
    """A compact bundle's classifier and its labels: for the recipe's input (see `adapted`),
    or with `adapt=False` at the side it was trained on (a teacher, see `_train_faces_for`)."""
    from ml.models import resolve_model
    from training.compact import classifier_from

    if bundle is None:
        return None
    spec, model_file = resolve_model(bundle)
    unknown = sorted(set(spec.labels) - set(UNION_LABELS))
    if unknown:
        raise ValueError(f"{bundle}: labels the joint model does not have: {unknown}")
    classifier = classifier_from(model_file)
    if adapt:
        classifier = adapted(classifier, recipe)
    elif classifier.input_shape[-1] != (1 if recipe.color == "grayscale" else 3):
        raise ValueError(f"{bundle}: a teacher must take the recipe's colour ({recipe.color})")
    return Bundled(classifier, tuple(spec.labels), model_file)


def _teacher(
    teachers: Sequence[tuple[Path, float]],
    recipe: JointRecipe,
    init: Bundled | None,
    cache_dir: Path | None = None,
) -> Teacher | None:
    """The given teachers, each at the side it was trained on; else the initial model."""
    if teachers:
        members = tuple(bundled(path, recipe, adapt=False) for path, _ in teachers)
        return Teacher(members, tuple(w for _, w in teachers), cache_dir)  # type: ignore[arg-type]
    return Teacher((init,), (1.0,), cache_dir) if init else None


def _teachers_named(teachers: Sequence[tuple[Path, float]]) -> str:
    if len(teachers) == 1:
        return str(teachers[0][0])
    return " + ".join(f"{w:g} x {path}" for path, w in teachers)


def _description(model, init_from: Path | None) -> str:
    from training.faceapi import is_faceapi

    side, channels = model.input_shape[1], model.input_shape[-1]
    faceapi = is_faceapi(model)
    if init_from:
        how = f"{init_from.name} fine-tuned"
    elif faceapi:
        how = "face-api.js's pretrained expression network fine-tuned"
    else:
        how = "trained from scratch"
    network = BACKBONE_NAMES["faceapi" if faceapi else "compact"]
    return (
        f"{network} ({model.count_params():,} parameters), {how} on several face "
        f"datasets at once (train-joint), {side}x{side} "
        f"{'greyscale' if channels == 1 else 'colour'}; outputs averaged over the face and its "
        "mirror image."
    )


def _write(
    model, out_dir: Path, recipe: JointRecipe, metrics, data_dirs, init_from, teachers
) -> Path:
    from training.compact import with_flip_averaging

    serving = with_flip_averaging(model)
    spec = BundleSpec(
        name=recipe.name,
        labels=UNION_LABELS,
        input_size=(recipe.input_size, recipe.input_size),
        color=recipe.color,  # type: ignore[arg-type]
        normalization="zero_to_one",
        model_file=MODEL_FILE,
        crop_margin=CROP_MARGIN,
        description=_description(model, init_from),
    )
    card = ModelCard(
        data="; ".join(str(d) for d in data_dirs)
        + (f"; initialised from {init_from}" if init_from else "")
        + (f"; distilled from {_teachers_named(teachers)}" if teachers else ""),
        split="each dataset's val/ folder: FER2013 PublicTest, AIHub split by person, SFEW by film "
        "(`moodbot split`)",
        metrics=metrics,
        settings=asdict(recipe),
    )
    bundle = write_bundle(out_dir / "bundle", serving, spec, card)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return bundle
