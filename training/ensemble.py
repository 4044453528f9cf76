"""One bundle out of several: a Keras model that averages its members' probabilities.

Members may differ in input size and normalisation (moodnet takes 48x48 in 0..1,
mini-Xception 64x64 in -1..1). The ensemble takes the largest member input in 0..1 and
adapts it for each member inside the graph, so the engine still calls one model per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ml.loader import load_emotion_model
from ml.models import BundleSpec, KerasEmotionModel
from training.bundle import MODEL_FILE, ModelCard, write_bundle


class EnsembleError(ValueError):
    """The members cannot be combined (different labels or colours)."""


def ensemble_spec(name: str, members: Sequence[BundleSpec]) -> BundleSpec:
    """The ensemble's manifest: the members' labels, their largest input, 0..1 pixels."""
    first = members[0]
    for spec in members[1:]:
        if spec.labels != first.labels:
            raise EnsembleError(
                f"{spec.name} predicts {spec.labels}, {first.name} predicts {first.labels}: "
                "members must share labels in the same order"
            )
        if spec.color != first.color:
            raise EnsembleError(f"{spec.name} is {spec.color}, {first.name} is {first.color}")
    side = max(max(spec.input_size) for spec in members)
    names = " + ".join(spec.name for spec in members)
    return BundleSpec(
        name=name,
        labels=first.labels,
        input_size=(side, side),
        color=first.color,
        normalization="zero_to_one",
        model_file=MODEL_FILE,
        description=f"Mean of the probabilities of {names}.",
        # One crop feeds every member: the middle of the framings they were trained on.
        crop_margin=round(sum(spec.crop_margin for spec in members) / len(members), 3),
    )


def _adapted(pixels: Any, spec: BundleSpec) -> Any:
    """0..1 pixels resized and normalised the way `spec`'s model was trained."""
    import keras

    x = keras.layers.Resizing(*spec.input_size, interpolation="bilinear")(pixels)
    if spec.normalization == "minus_one_to_one":
        return keras.layers.Rescaling(2.0, offset=-1.0)(x)
    if spec.normalization == "zero_to_one":
        return x
    raise EnsembleError(f"{spec.name}: {spec.normalization} inputs are not supported in ensembles")


def _single(output: Any) -> Any:
    # Models saved by old Keras (mini-Xception's HDF5) return a one-element list.
    return output[0] if isinstance(output, list | tuple) else output


def build_ensemble(name: str, members: Sequence[KerasEmotionModel]) -> tuple[Any, BundleSpec]:
    """A Keras model averaging `members`, and its bundle spec."""
    import keras

    if len(members) < 2:
        raise EnsembleError("an ensemble needs at least two models")
    spec = ensemble_spec(name, [m.spec for m in members])
    pixels = keras.Input((*spec.input_size, spec.channels), name="face")
    # Each member inside its own uniquely named wrapper: two runs of one architecture carry
    # the same model name, and Keras wants names unique within a model.
    wrapped = [keras.Sequential([m.keras_model], name=f"member_{i}") for i, m in enumerate(members)]
    # An inference-only graph: members always run with their batch-norm statistics fixed.
    outputs = [
        _single(w(_adapted(pixels, m.spec), training=False))
        for w, m in zip(wrapped, members, strict=True)
    ]
    mean = keras.layers.Average(name="mean_probabilities")(outputs)
    return keras.Model(pixels, mean, name=name.replace("-", "_")), spec


def write_ensemble(
    directory: Path, name: str, models: Sequence[str | Path], card: ModelCard
) -> Path:
    """Load the members by name or bundle path and write the ensemble bundle."""
    members = [load_emotion_model(model) for model in models]
    keras_model, spec = build_ensemble(name, members)
    return write_bundle(directory, keras_model, spec, card)
