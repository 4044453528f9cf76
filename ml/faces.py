"""Face detection (MTCNN) on a downscaled copy, and face crops levelled by the eyes."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

# Share of the face box added on each side of a crop, unless a model says otherwise
# (BundleSpec.crop_margin). Every training set fills the crop with the face: MTCNN's box covers
# ~98% of a FER2013 image and ~99% of an AIHub one, and SFEW's crops are tighter still. Through
# the whole pipeline on their train splits, 0.2 read 6-12 points under the best margin for the
# models trained on them; 0.05 is best or within 3.3 points of it for every model on every set
# (docs/TRAINING.md, "Framing and tight crops").
CROP_MARGIN = 0.05
_PNET_MIN_SIZE = 12  # PNet's receptive field: no pyramid level may be smaller than this
# A photo cut down to the face (a cropped selfie, a film still, a dataset image) can leave MTCNN
# no room around the face, and it finds nothing. Such photos are tried again inside a border of
# their mean grey, this share of their longest side wide: with the engine's detector, SFEW
# train's 714 film crops then miss 64 faces, not 203 (docs/TRAINING.md, "Framing and tight crops").
RETRY_BORDER = 0.25


def fixed_scale_pyramid(
    width: int, height: int, min_face_size: int, scale_factor: float, min_size: int = 12
) -> np.ndarray:
    """MTCNN's image pyramid with every level at least `min_size` pixels on its short side.

    mtcnn 1.0.0 counts levels from the image size alone, ignoring the first scale
    (min_size / min_face_size); with min_face_size above ~23 its last level falls under
    12 px, TensorFlow fails inside PNet and detect_faces silently returns no faces.
    """
    first = min_size / min_face_size
    short_side = min(width, height)
    scales: list[float] = []
    scale = first
    while short_side * scale >= min_size:
        scales.append(scale)
        scale *= scale_factor
    return np.asarray(scales)


@dataclass(frozen=True)
class Face:
    """One detected face, in the coordinates of the image it was found in."""

    box: tuple[float, float, float, float]  # x, y, width, height
    confidence: float
    landmarks: dict[str, tuple[float, float]]

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]

    def scaled(self, factor: float) -> Face:
        """The same face in an image `factor` times larger."""
        return Face(
            box=tuple(v * factor for v in self.box),  # type: ignore[arg-type]
            confidence=self.confidence,
            landmarks={k: (x * factor, y * factor) for k, (x, y) in self.landmarks.items()},
        )

    def shifted(self, dx: float, dy: float) -> Face:
        """The same face with (dx, dy) added to its coordinates (from a bordered copy back)."""
        x, y, w, h = self.box
        return Face(
            box=(x + dx, y + dy, w, h),
            confidence=self.confidence,
            landmarks={k: (px + dx, py + dy) for k, (px, py) in self.landmarks.items()},
        )


class FaceDetector:
    """MTCNN face detector that works on a small copy of the image and maps faces back."""

    def __init__(
        self,
        *,
        detect_max_side: int = 640,
        min_face_size: int = 20,
        min_confidence: float = 0.9,
        device: str = "CPU:0",
    ) -> None:
        if detect_max_side < 48:
            raise ValueError(f"detect_max_side must be at least 48, got {detect_max_side!r}")
        if min_face_size < _PNET_MIN_SIZE:
            raise ValueError(f"min_face_size must be at least 12, got {min_face_size!r}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be within 0..1, got {min_confidence!r}")
        _patch_mtcnn()
        from mtcnn import MTCNN  # heavy: imports TensorFlow

        self.detect_max_side = detect_max_side
        self.min_face_size = min_face_size
        self.min_confidence = min_confidence
        self._mtcnn = MTCNN(device=device)
        _compile_stages(self._mtcnn)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Every face in an RGB uint8 image, largest first, in that image's coordinates.

        An image with no face found is tried once more inside a border (RETRY_BORDER).
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB array, got shape {rgb.shape}")
        small, factor = _downscale(rgb, self.detect_max_side)
        if min(small.shape[:2]) < _PNET_MIN_SIZE:
            return []
        faces = self._find(small) or self._find_framed(small)
        return sorted((f.scaled(factor) for f in faces), key=lambda f: f.area, reverse=True)

    def _find(self, rgb: np.ndarray) -> list[Face]:
        raw = self._mtcnn.detect_faces(rgb, min_face_size=self.min_face_size)
        faces = [_face_from_mtcnn(item) for item in raw]
        return [f for f in faces if f.confidence >= self.min_confidence]

    def _find_framed(self, rgb: np.ndarray) -> list[Face]:
        border = round(RETRY_BORDER * max(rgb.shape[:2]))
        framed = np.pad(
            rgb, ((border, border), (border, border), (0, 0)), constant_values=round(rgb.mean())
        )
        return [face.shifted(-border, -border) for face in self._find(framed)]


def _mtcnn_slots() -> list[tuple[object, str, object]]:
    """(module, name, our replacement) for each mtcnn function this module replaces."""
    from mtcnn.stages import stage_pnet
    from mtcnn.utils import images

    return [
        (stage_pnet, "build_scale_pyramid", fixed_scale_pyramid),
        (images, "normalize_images", normalized_tensor),
    ]


_PUBLISHED: dict[tuple[str, str], object] = {}


def _patch_mtcnn() -> None:
    # Patched where mtcnn looks the functions up, so every caller of MTCNN gets the fixes.
    for module, name, ours in _mtcnn_slots():
        current = getattr(module, name)
        if current is not ours:
            _PUBLISHED[(module.__name__, name)] = current
            setattr(module, name, ours)


@contextmanager
def published_mtcnn() -> Iterator[None]:
    """mtcnn's own functions while the block runs (the benchmark's seed-style baseline).

    Not thread-safe: only for a process where no FaceDetector works at the same time.
    """
    slots = [(m, n, o) for m, n, o in _mtcnn_slots() if (m.__name__, n) in _PUBLISHED]
    for module, name, _ in slots:
        setattr(module, name, _PUBLISHED[(module.__name__, name)])
    try:
        yield
    finally:
        for module, name, ours in slots:
            setattr(module, name, ours)


def normalized_tensor(pixels: np.ndarray) -> object:
    """MTCNN's input normalisation, (x - 127.5) / 128, as one float32 tensor.

    mtcnn returns a float64 NumPy array here, which TensorFlow converts again for every
    pyramid level and every crop: ~11 ms of a 75 ms detection on a 640x480 photo, for the
    same boxes.
    """
    import tensorflow as tf

    return tf.convert_to_tensor((np.asarray(pixels, dtype=np.float32) - 127.5) / 128.0)


def _compile_stages(mtcnn: object) -> None:
    """Run MTCNN's three networks as TensorFlow graphs instead of layer by layer.

    mtcnn calls its Keras models eagerly, one Python dispatch per layer and pyramid level;
    one shape-generic graph per network cut detection time about threefold on our 2-core CPU
    (docs/benchmarks.md) with identical boxes.
    """
    import tensorflow as tf

    any_images = tf.TensorSpec([None, None, None, 3], tf.float32)
    for stage in mtcnn.stages:  # type: ignore[attr-defined]
        network = stage._model
        stage._model = tf.function(
            lambda batch, network=network: network(batch, training=False),
            input_signature=[any_images],
        )


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    height, width = rgb.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return rgb, 1.0
    factor = longest / max_side
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small), width / size[0]


def _face_from_mtcnn(item: dict) -> Face:
    # mtcnn returns numpy scalar types: cast so results serialise as JSON.
    x, y, w, h = (float(v) for v in item["box"])
    landmarks = {
        name: (float(point[0]), float(point[1])) for name, point in item["keypoints"].items()
    }
    return Face(box=(x, y, w, h), confidence=float(item["confidence"]), landmarks=landmarks)


def crop_face(
    rgb: np.ndarray,
    face: Face,
    *,
    margin: float = CROP_MARGIN,
    level: bool = True,
    max_side: int | None = None,
) -> np.ndarray:
    """A square RGB crop around `face`, `margin` of its size added on each side.

    With `level`, the crop is rotated so the eyes sit on a horizontal line, which is how
    the training faces (FER2013, AIHub) look. Areas outside the image repeat the edge pixels.
    With `max_side`, a larger crop is shrunk to that side (the model resizes it anyway, and
    rotating a 700-pixel window costs more than the whole classification).
    """
    if margin < 0:
        raise ValueError(f"margin must not be negative, got {margin!r}")
    x, y, w, h = face.box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    angle = _eye_angle(face) if level else 0.0
    if abs(angle) < 1.0:
        return _shrunk(_square(rgb, cx, cy, side), max_side)
    # Take a larger window first so the rotated corners stay inside real pixels.
    window = _shrunk(
        _square(rgb, cx, cy, side * math.sqrt(2)), max_side and max_side * math.sqrt(2)
    )
    rotated = Image.fromarray(window).rotate(angle, resample=Image.Resampling.BILINEAR)
    inner = round(window.shape[0] / math.sqrt(2))
    start = (window.shape[0] - inner) // 2
    return np.asarray(rotated)[start : start + inner, start : start + inner]


def _shrunk(square: np.ndarray, max_side: float | None) -> np.ndarray:
    if not max_side or square.shape[0] <= max_side:
        return square
    side = round(max_side)
    small = Image.fromarray(square).resize(
        (side, side), Image.Resampling.BILINEAR, reducing_gap=2.0
    )
    return np.asarray(small)


def _eye_angle(face: Face) -> float:
    """Degrees to rotate (counter-clockwise, as Pillow does) to level the eyes."""
    try:
        (lx, ly), (rx, ry) = face.landmarks["left_eye"], face.landmarks["right_eye"]
    except KeyError:
        return 0.0
    angle = math.degrees(math.atan2(ry - ly, rx - lx))
    # A face turned more than 45 degrees is more likely a bad landmark than a real tilt.
    return angle if abs(angle) <= 45.0 else 0.0


def _square(rgb: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    """The square window centred on (cx, cy), edge-padded where it leaves the image."""
    size = max(1, round(side))
    left, top = round(cx - size / 2.0), round(cy - size / 2.0)
    height, width = rgb.shape[:2]
    pad = (
        (max(0, -top), max(0, top + size - height)),
        (max(0, -left), max(0, left + size - width)),
        (0, 0),
    )
    window = rgb[max(0, top) : top + size, max(0, left) : left + size]
    if any(before or after for before, after in pad[:2]):
        window = np.pad(window, pad, mode="edge")
    return np.ascontiguousarray(window)
