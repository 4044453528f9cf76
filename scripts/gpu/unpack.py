"""On the GPU machine: unpack .gpu/*.npz.xz into folder-per-class PNGs (lossless) for `train`."""

import io
import lzma
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ml.models import FER_LABELS


def unpack(source: Path, target: Path) -> None:
    arrays = np.load(io.BytesIO(lzma.decompress(source.read_bytes())))
    images, labels = arrays["x"], arrays["y"]
    for name in FER_LABELS:
        (target / name).mkdir(parents=True, exist_ok=True)

    def save(i: int) -> None:
        Image.fromarray(images[i, ..., 0]).save(target / FER_LABELS[labels[i]] / f"{i:05d}.png")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(save, range(len(images))))
    print(target, len(images), np.bincount(labels, minlength=len(FER_LABELS)).tolist(), flush=True)


if __name__ == "__main__":
    root = Path(os.environ.get("DATA_ROOT", "data/fer2013"))
    unpack(Path(".gpu/train.npz.xz"), root / "train")
    unpack(Path(".gpu/val6.npz.xz"), root / "val")
