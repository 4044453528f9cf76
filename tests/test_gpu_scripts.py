"""scripts/gpu: FER2013 packed for a GPU machine comes back out as the same faces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from ml.models import FER_LABELS
from training.data import load_faces

REPO = Path(__file__).resolve().parent.parent


def _run(script: str, cwd: Path, **env: str) -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu" / script)],
        cwd=cwd,
        env=environment,
        check=True,
        capture_output=True,
    )


def test_pack_then_unpack_keeps_train_exact_and_val_within_two_grey_levels(
    tiny_fer: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data" / "fer2013"
    for part in ("train", "val"):
        shutil.copytree(tiny_fer, data / part)
    _run("pack.py", tmp_path)
    assert (tmp_path / ".gpu" / "train.npz.xz").stat().st_size > 0

    _run("unpack.py", tmp_path, DATA_ROOT=str(tmp_path / "back"))

    for part, tolerance in (("train", 0), ("val", 2)):
        before = load_faces(data / part, FER_LABELS, size=48)
        after = load_faces(tmp_path / "back" / part, FER_LABELS, size=48)
        assert after.counts() == before.counts()  # the broken file stays behind
        # Unpacked files are numbered in the packed order, which is the loaded order.
        np.testing.assert_array_equal(after.labels, before.labels)
        difference = np.abs(after.images.astype(int) - before.images.astype(int))
        assert difference.max() <= tolerance
