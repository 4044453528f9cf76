"""Write a model bundle the bot loads directly: weights, manifest (labels, preprocessing), card."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml.models import BUNDLE_FILE, BundleSpec

MODEL_FILE = "model.keras"
LITE_FILE = "model.tflite"  # what `moodbot quantize` writes instead (ml/lite.py)
CARD_FILE = "MODEL_CARD.md"


@dataclass
class ModelCard:
    """What a person needs to trust a model: data, split, metrics, date and exact command."""

    data: str
    split: str
    metrics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    command: str = field(default_factory=lambda: shlex.join(["moodbot", *sys.argv[1:]]))
    date: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d"))

    def to_markdown(self, spec: BundleSpec) -> str:
        lines = [
            f"# Model card: {spec.name}",
            "",
            spec.description or "",
            "",
            f"- Date: {self.date}",
            f"- Labels: {', '.join(spec.labels)}",
            f"- Input: {spec.input_size[0]}x{spec.input_size[1]} {spec.color}, "
            f"normalisation `{spec.normalization}`",
            f"- Data: {self.data}",
            f"- Split: {self.split}",
            f"- Command: `{self.command}`",
            "",
            "## Metrics",
            "",
            "```json",
            json.dumps(self.metrics, indent=2, ensure_ascii=False),
            "```",
            "",
            "## Training settings",
            "",
            "```json",
            json.dumps(self.settings, indent=2, ensure_ascii=False),
            "```",
        ]
        if self.notes:
            lines += ["", "## Notes", "", self.notes]
        return "\n".join(lines) + "\n"


def inference_copy(model: Any) -> Any:
    """The same network without optimiser state, which would triple the bundle's size."""
    import keras

    # clone_model would compile the copy too, and saving writes a compiled model's optimiser.
    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def write_bundle(directory: Path, keras_model: Any, spec: BundleSpec, card: ModelCard) -> Path:
    """Save `keras_model` with its manifest and card; returns the bundle directory.

    Files are written under temporary names and renamed at the end, so an interrupted run
    never leaves a bundle that looks complete but is not.
    """
    if spec.model_file != MODEL_FILE:
        raise ValueError(f"bundle model_file must be {MODEL_FILE!r}, got {spec.model_file!r}")
    directory.mkdir(parents=True, exist_ok=True)
    staged = {MODEL_FILE: directory / f".{MODEL_FILE}.partial.keras"}
    inference_copy(keras_model).save(staged[MODEL_FILE])
    _publish(directory, {**staged, **_staged_texts(directory, spec, card)})
    return directory


def write_lite_bundle(
    directory: Path, flatbuffer: bytes, spec: BundleSpec, card: ModelCard
) -> Path:
    """Save a LiteRT model with its manifest and card, as carefully as `write_bundle`."""
    if spec.model_file != LITE_FILE:
        raise ValueError(f"bundle model_file must be {LITE_FILE!r}, got {spec.model_file!r}")
    directory.mkdir(parents=True, exist_ok=True)
    staged = directory / f".{LITE_FILE}.partial"
    staged.write_bytes(flatbuffer)
    _publish(directory, {LITE_FILE: staged, **_staged_texts(directory, spec, card)})
    return directory


def rewrite_card(directory: Path, spec: BundleSpec, card: ModelCard) -> None:
    """Rewrite a bundle's manifest and card (after scoring it, say) the same careful way."""
    _publish(directory, _staged_texts(directory, spec, card))


def _staged_texts(directory: Path, spec: BundleSpec, card: ModelCard) -> dict[str, Path]:
    manifest = {**spec.to_json(), "extra": {**spec.extra, "metrics": card.metrics}}
    texts = {
        BUNDLE_FILE: json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
        CARD_FILE: card.to_markdown(spec),
    }
    staged = {}
    for name, text in texts.items():
        staged[name] = directory / f".{name}.partial"
        staged[name].write_text(text, encoding="utf-8")
    return staged


def _publish(directory: Path, staged: dict[str, Path]) -> None:
    for final, temporary in staged.items():
        temporary.replace(directory / final)
