"""Re-wrap a trained compact bundle with other test-time views, without training again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ml.models import resolve_model
from training.bundle import CARD_FILE, ModelCard, write_bundle


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
    from training.compact import classifier_from, description, with_flip_averaging

    spec, weights = resolve_model(source)
    classifier = classifier_from(weights)
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
            description=description(classifier, zoom_out),
            crop_margin=spec.crop_margin if crop_margin is None else crop_margin,
        ),
        card,
    )


def _demoted(markdown: str) -> str:
    """Headings one level down, so a quoted card nests under the new card's notes."""
    return "\n".join(
        "##" + line if line.startswith("#") else line for line in markdown.splitlines()
    )
