"""A bundle's classifier as a quantized TensorFlow Lite model (`moodbot quantize` writes one).

Why: on this CPU the same compact network answers a face about four times faster through
LiteRT's XNNPACK kernels with 8-bit weights than through TensorFlow, in a quarter of the
file (docs/benchmarks.md), which is what lets the default average several networks within
its time budget. Preprocessing stays in `ml/models.py`, shared with every other runtime.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from ml.errors import ModelLoadError
from ml.models import BundleClassifier, BundleSpec
from ml.quiet import native_noise_hidden

log = logging.getLogger(__name__)


class LiteClassifier(BundleClassifier):
    """A `.tflite` model run in-process by the LiteRT interpreter."""

    def __init__(self, spec: BundleSpec, model_file: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        if not model_file.is_file():
            raise ModelLoadError(f"Model file {model_file} does not exist.")
        try:
            self._interpreter = Interpreter(
                model_path=str(model_file), num_threads=len(os.sched_getaffinity(0))
            )
            (self._input,) = self._interpreter.get_input_details()
            (self._output,) = self._interpreter.get_output_details()
            # LiteRT announces its XNNPACK delegate on file descriptor 2, outside Python's
            # logging, once a process, when tensors are first allocated: now, the line hidden.
            with native_noise_hidden():
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"Model file {model_file} could not be loaded: {exc}") from exc
        expected = (*spec.input_size, spec.channels)
        if tuple(self._input["shape"][1:]) != expected:
            raise ModelLoadError(
                f"Model file {model_file} takes inputs {tuple(self._input['shape'][1:])}, "
                f"but its bundle declares {expected}."
            )
        self.spec = spec
        self.source = f"Model {spec.name!r}"
        self._batch = int(self._input["shape"][0])
        # One interpreter holds one set of tensors: calls from two threads must take turns.
        self._lock = threading.Lock()
        log.info("Loaded emotion model %s from %s", spec.name, model_file)

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if len(batch) != self._batch:  # tensors are sized per batch; resize only on change
                self._interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
                self._interpreter.allocate_tensors()
                self._batch = len(batch)
            self._interpreter.set_tensor(self._input["index"], np.asarray(batch, np.float32))
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output["index"]).copy()
