"""`moodbot quantize`: a Keras bundle as a LiteRT model with 8-bit weights, scored against it.

Dynamic-range quantization stores every weight in 8 bits and computes in float, so it needs
no calibration faces and moves answers very little; the LiteRT interpreter then runs the
network several times faster on this CPU than TensorFlow does (ml/lite.py). Both the source
and its quantized copy are scored on each val, every image counted, so the card shows what
quantizing cost.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ml.models import load_keras_model, resolve_model
from training.bundle import LITE_FILE, ModelCard, write_lite_bundle
from training.evaluate import evaluate

log = logging.getLogger(__name__)

QUANTIZATION = "LiteRT dynamic-range quantization: 8-bit weights, float activations"


def lite_flatbuffer(keras_model: Any) -> bytes:
    """The network as a LiteRT model with 8-bit weights."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved:
        keras_model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()


def quantize(
    source: str | Path, out_dir: Path, data_dirs: Sequence[Path] = (), name: str | None = None
) -> dict[str, Any]:
    """Write `source`'s network quantized as a bundle in `out_dir`; return the metrics on
    each dataset's aligned val faces (`DIR/val`), the source's beside the quantized model's."""
    spec, weights = resolve_model(source)
    if out_dir.resolve() == weights.parent.resolve():
        raise ValueError(f"{out_dir} holds the source bundle; write the quantized one elsewhere")
    flatbuffer = lite_flatbuffer(load_keras_model(spec, weights))
    lite_spec = dataclasses.replace(
        spec,
        name=name or spec.name,
        model_file=LITE_FILE,
        description=f"{spec.description} Stored with 8-bit weights ({QUANTIZATION}).".strip(),
        extra={key: value for key, value in spec.extra.items() if key != "metrics"},
    )
    card = ModelCard(
        data=f"{source}'s (its card says what and how it learnt); no new training",
        split="the source's",
        settings={"source": str(source), "quantization": QUANTIZATION},
    )
    if spec.extra.get("metrics"):  # how the source was chosen (an ensemble's weights, say)
        card.settings["source_metrics"] = spec.extra["metrics"]
    write_lite_bundle(out_dir, flatbuffer, lite_spec, card)
    log.info("Wrote %s (%.1f MB)", out_dir / LITE_FILE, len(flatbuffer) / 1e6)
    if data_dirs:
        card.metrics = {data.name: _scored(data / "val", out_dir, source) for data in data_dirs}
        card.split = "scored on the aligned val faces of " + ", ".join(map(str, data_dirs))
        write_lite_bundle(out_dir, flatbuffer, lite_spec, card)
    return card.metrics


def _scored(val_dir: Path, quantized: Path, source: str | Path) -> dict[str, Any]:
    """Both models on one pass over the val faces (each image decoded once)."""
    report = evaluate(val_dir, [quantized, source], aligned=True, progress=False)
    keys = ("images", "accuracy_all", "macro_f1", "ms_per_face", "per_class", "skipped_classes")
    # results: the two models in the order given, then their mean, which is not wanted here.
    results = [result.to_json() for result in report.results[:2]]
    return {
        side: {key: result[key] for key in keys}
        for side, result in zip(("quantized", "source"), results, strict=True)
    }
