"""Pack FER2013 for a GPU machine reached through a 64 MiB transfer: writes .gpu/*.npz.xz.

Train goes losslessly (51.6 MB with xz; FER2013's noisy pixels compress no better as PNG or
WebP). Val goes quantised to 6 bits (within 2 grey levels, 4.7 MB): it only steers the run's
own checkpoint and weight-average choice; score the bundle afterwards on the exact val set
(`moodbot views BUNDLE OUT --zoom-out 0 --val-dir data/fer2013/val`).
"""

import io
import lzma
from pathlib import Path

import numpy as np

from ml.models import FER_LABELS
from training.data import load_faces


def pack(target: Path, images: np.ndarray, labels: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=images, y=labels)
    target.write_bytes(lzma.compress(buffer.getvalue(), preset=6))
    print(f"{target}: {len(images)} faces, {target.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    out = Path(".gpu")
    out.mkdir(exist_ok=True)
    train = load_faces(Path("data/fer2013/train"), FER_LABELS, size=48)
    val = load_faces(Path("data/fer2013/val"), FER_LABELS, size=48)
    pack(out / "train.npz.xz", train.images, train.labels)
    pack(out / "val6.npz.xz", (val.images >> 2 << 2) | 2, val.labels)
