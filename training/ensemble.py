"""One bundle out of several: a Keras model that averages its members' probabilities, by weight.

Members may differ in input size, colour and normalisation (moodnet takes 48x48 grey in 0..1,
mini-Xception 64x64 in -1..1, the faceapi backbone 112x112 colour). The ensemble takes the
largest member input in 0..1, in colour if any member reads colour, and adapts it for each
member inside the graph (a grey member gets the grey conversion PIL's "L" does), so the engine
still calls one model per batch.

Members may also differ in labels (moodnet knows FER's seven, a train-joint model those and
anxious, hurt, embarrassed): the ensemble answers over the union, in order of first
appearance, and a member gives no probability to a label it does not know.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ml.loader import load_emotion_model
from ml.models import BundleSpec, KerasEmotionModel
from training.bundle import MODEL_FILE, ModelCard, write_bundle


class EnsembleError(ValueError):
    """The members cannot be combined (too few, bad weights, an unsupported input)."""


def ensemble_spec(
    name: str, members: Sequence[BundleSpec], shares: Sequence[float] | None = None
) -> BundleSpec:
    """The ensemble's manifest: the union of the members' labels, their largest input (in
    colour if any member reads colour), 0..1 pixels."""
    color = "rgb" if any(spec.color == "rgb" for spec in members) else "grayscale"
    side = max(max(spec.input_size) for spec in members)
    if shares is None or len(set(shares)) == 1:
        mean = "Mean of the probabilities of " + " + ".join(spec.name for spec in members)
    else:
        mean = "Weighted mean of the probabilities of " + " + ".join(
            f"{spec.name} ({share:.2f})" for spec, share in zip(members, shares, strict=True)
        )
    return BundleSpec(
        name=name,
        labels=union_labels(members),
        input_size=(side, side),
        color=color,
        normalization="zero_to_one",
        model_file=MODEL_FILE,
        description=f"{mean}.",
        # One crop feeds every member: the middle of the framings they were trained on.
        crop_margin=round(sum(spec.crop_margin for spec in members) / len(members), 3),
    )


def union_labels(members: Sequence[BundleSpec]) -> tuple[str, ...]:
    """Every member's labels, each once, in order of first appearance."""
    return tuple(dict.fromkeys(label for spec in members for label in spec.labels))


def _in_union(probabilities: Any, spec: BundleSpec, union: Sequence[str], index: int) -> Any:
    """A member's probabilities placed in the union's columns (zero where it has no label)."""
    import keras
    import numpy as np

    from training.joint import on_union

    if tuple(spec.labels) == tuple(union):
        return probabilities
    layer = keras.layers.Dense(len(union), use_bias=False, trainable=False, name=f"labels_{index}")
    placed = layer(probabilities)
    # Row i moves the member's label i to its union column: the identity placed on the union.
    layer.set_weights([on_union(np.eye(len(spec.labels)), spec.labels, union)])
    return placed


def _adapted(pixels: Any, spec: BundleSpec, index: int) -> Any:
    """0..1 pixels resized, made grey and normalised the way `spec`'s model was trained."""
    import keras

    x = keras.layers.Resizing(*spec.input_size, interpolation="bilinear")(pixels)
    if x.shape[-1] == 3 and spec.channels == 1:
        x = _grey(x, index)
    if spec.normalization == "minus_one_to_one":
        return keras.layers.Rescaling(2.0, offset=-1.0)(x)
    if spec.normalization == "zero_to_one":
        return x
    raise EnsembleError(f"{spec.name}: {spec.normalization} inputs are not supported in ensembles")


def _grey(rgb: Any, index: int) -> Any:
    """RGB to grey by PIL's "L" weights (what the grey members were trained on), as a fixed
    1x1 convolution."""
    import keras

    from training.joint import GREY_FROM_RGB

    layer = keras.layers.Dense(1, use_bias=False, trainable=False, name=f"grey_{index}")
    grey = layer(rgb)
    layer.set_weights([GREY_FROM_RGB[:, None]])
    return grey


def _single(output: Any) -> Any:
    # Models saved by old Keras (mini-Xception's HDF5) return a one-element list.
    return output[0] if isinstance(output, list | tuple) else output


def build_ensemble(
    name: str, members: Sequence[KerasEmotionModel], weights: Sequence[float] | None = None
) -> tuple[Any, BundleSpec]:
    """A Keras model averaging `members` by `weights` (equal by default), and its bundle spec."""
    import keras

    if len(members) < 2:
        raise EnsembleError("an ensemble needs at least two models")
    shares = _shares(weights or [1.0] * len(members), len(members))
    spec = ensemble_spec(name, [m.spec for m in members], shares)
    pixels = keras.Input((*spec.input_size, spec.channels), name="face")
    # Each member inside its own uniquely named wrapper: two runs of one architecture carry
    # the same model name, and Keras wants names unique within a model.
    wrapped = [keras.Sequential([m.keras_model], name=f"member_{i}") for i, m in enumerate(members)]
    # An inference-only graph: members always run with their batch-norm statistics fixed.
    outputs = [
        keras.layers.Rescaling(share, name=f"share_{i}")(
            _in_union(
                _single(w(_adapted(pixels, m.spec, i), training=False)), m.spec, spec.labels, i
            )
        )
        for i, (w, m, share) in enumerate(zip(wrapped, members, shares, strict=True))
    ]
    mean = keras.layers.Add(name="mean_probabilities")(outputs)
    return keras.Model(pixels, mean, name=name.replace("-", "_")), spec


def _shares(weights: Sequence[float], count: int) -> list[float]:
    """Weights as shares summing to 1; one positive weight per member."""
    if len(weights) != count:
        raise EnsembleError(f"{len(weights)} weights for {count} models")
    if min(weights) <= 0:
        raise EnsembleError(f"weights must be positive, got {list(weights)}")
    return [w / sum(weights) for w in weights]


def write_ensemble(
    directory: Path, name: str, members: Sequence[tuple[str | Path, float]], card: ModelCard
) -> Path:
    """Load the (model name or bundle path, weight) members and write the ensemble bundle."""
    models = [load_emotion_model(model) for model, _ in members]
    for (model, _), loaded in zip(members, models, strict=True):
        if not isinstance(loaded, KerasEmotionModel):
            raise EnsembleError(f"{model} is not a Keras bundle; ensembles combine Keras models")
    keras_model, spec = build_ensemble(name, models, [weight for _, weight in members])
    return write_bundle(directory, keras_model, spec, card)
