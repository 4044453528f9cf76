"""Re-wrap a trained compact bundle with other test-time views, without training again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ml.models import resolve_model
from training.bundle import CARD_FILE, ModelCard, write_bundle
from training.compact import with_flip_averaging


def rewrap_views(
    source: Path,
    output_dir: Path,
    zoom_out: float,
    card: ModelCard,
    *,
    crop_margin: float | None = None,
) -> Path:
    """Write `source`'s classifier into `output_dir`, averaged over flips and `zoom_out` views.

    `crop_margin` replaces the source's framing of photo faces (BundleSpec.crop_margin).

    The source card travels along under the new card's notes: the training it documents is
    still what the new bundle's weights are.
    """
    import keras

    import ml.layers  # noqa: F401  (registers FlipAverage for loading)

    spec, weights = resolve_model(source)
    serving = keras.models.load_model(weights, compile=False)
    try:
        classifier = serving.get_layer("flip_average").classifier
    except ValueError:
        raise ValueError(
            f"{weights}: not a compact model from `moodbot train` (no flip_average layer)"
        ) from None
    views = "the face and its mirror image"
    if zoom_out:
        views += f", and both shrunk by {zoom_out:.2%} of the side per edge"
    network = spec.description.split("; outputs averaged over")[0]
    source_card = weights.parent / CARD_FILE
    quoted = source_card.read_text(encoding="utf-8") if source_card.exists() else ""
    card.notes = "\n\n".join(
        part for part in (card.notes, f"The card of {source}:", _demoted(quoted)) if part
    )
    return write_bundle(
        output_dir,
        with_flip_averaging(classifier, zoom_out=zoom_out),
        replace(
            spec,
            description=f"{network}; outputs averaged over {views}.",
            crop_margin=spec.crop_margin if crop_margin is None else crop_margin,
        ),
        card,
    )


def _demoted(markdown: str) -> str:
    """Headings one level down, so a quoted card nests under the new card's notes."""
    return "\n".join(
        "##" + line if line.startswith("#") else line for line in markdown.splitlines()
    )
