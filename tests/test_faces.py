"""Face detection with the real MTCNN on real photos, and levelled crops."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ml.faces import Face, FaceDetector, crop_face, fixed_scale_pyramid

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


@pytest.fixture(scope="module")
def hopper(grace_hopper_jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(grace_hopper_jpeg)).convert("RGB"))


def eye_angle(face: Face) -> float:
    (lx, ly), (rx, ry) = face.landmarks["left_eye"], face.landmarks["right_eye"]
    return float(np.degrees(np.arctan2(ry - ly, rx - lx)))


@pytest.mark.parametrize("min_face_size", [20, 24, 40, 80])
def test_pyramid_never_goes_below_pnet_input(min_face_size: int) -> None:
    scales = fixed_scale_pyramid(640, 480, min_face_size, 0.709)
    assert len(scales) > 0
    assert min(scales) * 480 >= 12
    assert scales[0] == 12 / min_face_size


def test_large_min_face_size_still_finds_the_face(hopper: np.ndarray) -> None:
    # mtcnn 1.0.0 breaks above ~23 px; the fixed pyramid must not.
    faces = FaceDetector(min_face_size=40).detect(hopper)
    assert len(faces) == 1


def test_finds_one_face_with_landmarks(detector: FaceDetector, hopper: np.ndarray) -> None:
    (face,) = detector.detect(hopper)
    x, y, w, h = face.box
    assert 150 < x < 210 and 80 < y < 150 and 140 < w < 210 and 180 < h < 260
    assert face.confidence > 0.95
    assert set(face.landmarks) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert isinstance(face.confidence, float) and isinstance(face.box[0], float)


def test_boxes_map_back_from_the_downscaled_copy(
    detector: FaceDetector, hopper: np.ndarray
) -> None:
    (small,) = detector.detect(hopper)
    big = np.asarray(Image.fromarray(hopper).resize((hopper.shape[1] * 3, hopper.shape[0] * 3)))
    (large,) = detector.detect(big)  # detected on a 640 px copy, reported at full size
    assert large.box == pytest.approx(tuple(v * 3 for v in small.box), rel=0.08, abs=12)


def test_group_photo_faces_come_largest_first(detector: FaceDetector, group_photo: bytes) -> None:
    faces = detector.detect(np.asarray(Image.open(io.BytesIO(group_photo))))
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].box[0] < 512 <= faces[1].box[0]  # the astronaut is on the left


def test_a_photo_cut_down_to_the_face_is_tried_again_in_a_border(
    detector: FaceDetector, hopper: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    (face,) = detector.detect(hopper)
    x, y, w, h = (round(v) for v in face.box)
    dx, dy = w // 10, h // 10  # a tenth inside the box on every side
    tight = np.ascontiguousarray(hopper[y + dy : y + h - dy, x + dx : x + w - dx])
    (found,) = detector.detect(tight)
    # Reported in the tight photo's own coordinates: the box reaches past its edges.
    fx, fy, fw, fh = found.box
    assert fx < 0 and fy < 0 and fw > tight.shape[1] * 0.9 and fh > tight.shape[0] * 0.9
    left_eye = found.landmarks["left_eye"]
    assert 0 < left_eye[0] < tight.shape[1] / 2 and 0 < left_eye[1] < tight.shape[0] / 2
    monkeypatch.setattr("ml.faces.RETRY_BORDER", 0.0)
    assert detector.detect(tight) == []  # MTCNN alone finds nothing here


@pytest.mark.parametrize("kind", ["gradient", "noise", "flat", "tiny"])
def test_no_faces_in_synthetic_images(detector: FaceDetector, kind: str) -> None:
    rng = np.random.default_rng(7)
    images = {
        "gradient": np.dstack([np.tile(np.arange(256, dtype=np.uint8), (200, 1))] * 3),
        "noise": rng.integers(0, 256, (300, 400, 3), dtype=np.uint8),
        "flat": np.full((240, 320, 3), 200, dtype=np.uint8),
        "tiny": np.full((8, 8, 3), 90, dtype=np.uint8),
    }
    assert detector.detect(images[kind]) == []


def test_crop_levels_a_tilted_face(detector: FaceDetector, astronaut: np.ndarray) -> None:
    tilted = Image.fromarray(astronaut).rotate(20, expand=True, fillcolor=(128, 128, 128))
    (face,) = detector.detect(np.asarray(tilted))
    assert abs(eye_angle(face)) > 12

    def angle_after_crop(level: bool) -> float:
        crop = crop_face(np.asarray(tilted), face, level=level)
        assert crop.shape[0] == crop.shape[1]
        (again,) = detector.detect(np.asarray(Image.fromarray(crop).resize((300, 300))))
        return abs(eye_angle(again))

    assert angle_after_crop(level=True) < 5
    assert angle_after_crop(level=False) > 12


def test_crop_pads_faces_at_the_edge() -> None:
    rgb = np.zeros((100, 100, 3), dtype=np.uint8)
    rgb[:, :50] = 255
    face = Face(box=(0.0, 0.0, 40.0, 40.0), confidence=1.0, landmarks={})
    crop = crop_face(rgb, face, margin=0.5)
    assert crop.shape == (80, 80, 3)
    assert crop[0, 0, 0] == 255  # edge pixels repeated, not black


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="min_face_size must be at least 12, got 5"):
        FaceDetector(min_face_size=5)
    with pytest.raises(ValueError, match="margin must not be negative, got -1"):
        crop_face(np.zeros((9, 9, 3), np.uint8), Face((0, 0, 4, 4), 1.0, {}), margin=-1)


def test_published_mtcnn_restores_our_fixes_afterwards(hopper: np.ndarray) -> None:
    from mtcnn.stages import stage_pnet
    from mtcnn.utils import images

    from ml.faces import fixed_scale_pyramid, normalized_tensor, published_mtcnn

    detector = FaceDetector()
    ours = detector.detect(hopper)
    with published_mtcnn():
        assert stage_pnet.build_scale_pyramid is not fixed_scale_pyramid
        assert images.normalize_images is not normalized_tensor
        published = detector.detect(hopper)
    assert stage_pnet.build_scale_pyramid is fixed_scale_pyramid
    assert images.normalize_images is normalized_tensor
    # Same network, same photo: the fixes change speed, not the face found.
    assert np.allclose(published[0].box, ours[0].box, atol=2)
