"""Dataset scanning (AIHub layout, folders, file names) and resumable MTCNN preprocessing."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ml.faces import FaceDetector
from tests.conftest import GRACE_HOPPER, encode
from training.aihub import (
    DatasetNotFound,
    EmptyDataset,
    canonical_label,
    label_from_filename,
    scan_dataset,
)
from training.cli import app
from training.preprocess import SUMMARY_FILE, SettingsMismatch, preprocess

HAPPY_1 = "a1b2_여_30_기쁨_실내_20200101.jpg"
HAPPY_2 = "c3d4_남_60_기쁨_실외_20200102.jpg"
SAD_FACE = "e5f6_여_80_슬픔_실내_20200103.jpg"
SAD_NO_FACE = "g7h8_남_20_슬픔_실내_20200104.png"
SAD_BROKEN = "x0x0_남_20_슬픔_실내_20200105.jpg"
ANGRY_NAMED_HAPPY = "i9j0_여_30_기쁨_실내_20200106.jpg"
ANGRY_JSON_SAD = "k1l2_남_30_분노_실내_20200107.jpg"


class CountingDetector:
    """The real detector, counting how often it is asked."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        self.calls = 0

    def detect(self, rgb: np.ndarray) -> list:
        self.calls += 1
        return self.detector.detect(rgb)


def record(filename: str, emotion: str) -> dict[str, object]:
    return {"filename": filename, "gender": "여", "age": 30, "faceExp_uploader": emotion}


@pytest.fixture(scope="module")
def aihub(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """A tiny AIHub-layout dataset: real faces, a face-less image, a damaged file, mislabels."""
    root = tmp_path_factory.mktemp("aihub")
    hopper = GRACE_HOPPER.read_bytes()
    gradient = np.linspace(0, 255, 240 * 320 * 3).reshape(240, 320, 3).astype(np.uint8)
    files = {
        "기쁨": {HAPPY_1: encode(astronaut), HAPPY_2: hopper},
        # Unpacked on macOS, Korean names arrive decomposed (NFD).
        unicodedata.normalize("NFD", "슬픔"): {
            SAD_FACE: hopper,
            SAD_NO_FACE: encode(gradient, "PNG"),
            SAD_BROKEN: b"\xff\xd8\xff\xe0 not really a jpeg",
        },
        "분노": {ANGRY_NAMED_HAPPY: hopper, ANGRY_JSON_SAD: hopper},
    }
    for folder, images in files.items():
        (root / folder).mkdir()
        for name, data in images.items():
            (root / folder / name).write_bytes(data)
    records = {
        "기쁨": [record(HAPPY_1, "기쁨"), record(HAPPY_2, "기쁨"), record("gone.jpg", "기쁨")],
        "슬픔": [record(SAD_FACE, "슬픔"), record(SAD_NO_FACE, "슬픔")],
        "분노": [record(ANGRY_JSON_SAD, "슬픔")],
    }
    for emotion, items in records.items():
        (root / f"{emotion}.json").write_text(json.dumps(items, ensure_ascii=False), "utf-8")
    return root


def test_labels_come_from_korean_names_aliases_and_the_fourth_name_field() -> None:
    assert [canonical_label(n) for n in ("기쁨", "Anger", "sadness", "fearful", "happy")] == [
        "happy",
        "angry",
        "sad",
        "fear",
        "happy",
    ]
    assert label_from_filename(HAPPY_1) == "happy"
    assert label_from_filename(unicodedata.normalize("NFD", SAD_FACE)) == "sad"
    assert label_from_filename("PrivateTest_123.jpg") is None


def test_scan_reads_the_aihub_layout_and_leaves_out_mislabelled_images(aihub: Path) -> None:
    scan = scan_dataset(aihub)
    assert scan.layout == "aihub"
    assert scan.class_counts() == {"happy": 2, "sad": 3}
    mismatched = {p.path.name: p.detail for p in scan.problems}
    assert set(mismatched) == {ANGRY_NAMED_HAPPY, ANGRY_JSON_SAD}
    assert "JSON says sad" in mismatched[ANGRY_JSON_SAD]
    assert "file name says happy" in mismatched[ANGRY_NAMED_HAPPY]
    assert "기쁨.json lists 1 file(s) missing from 기쁨/" in scan.notes


def test_scan_reads_plain_folders_and_bare_aihub_names(tmp_path: Path) -> None:
    for folder, name in (("Anger", "a.png"), ("happiness", "b.png"), ("empty", None)):
        (tmp_path / "folders" / folder).mkdir(parents=True)
        if name:
            Image.new("RGB", (8, 8)).save(tmp_path / "folders" / folder / name)
    assert scan_dataset(tmp_path / "folders").class_counts() == {"angry": 1, "happy": 1}
    (tmp_path / "flat").mkdir()
    for name in (HAPPY_1, "unlabelled.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / "flat" / name)
    scan = scan_dataset(tmp_path / "flat")
    assert (scan.layout, scan.class_counts()) == ("names", {"happy": 1})
    assert [(p.path.name, p.reason) for p in scan.problems] == [("unlabelled.jpg", "no_label")]


def test_scan_fails_clearly_on_a_missing_or_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match="nowhere"):
        scan_dataset(tmp_path / "nowhere")
    with pytest.raises(EmptyDataset, match="no labelled images"):
        scan_dataset(tmp_path)


def test_preprocess_crops_faces_resumes_and_reports_what_it_skipped(
    aihub: Path, tmp_path: Path, engine
) -> None:
    out = tmp_path / "processed"
    detector = CountingDetector(engine.detector)
    first = preprocess(aihub, out, size=224, detector=detector, progress=False)  # type: ignore[arg-type]
    assert (first.written, first.existing) == (3, 0)
    assert first.skipped_counts == {"label_mismatch": 2, "no_face": 1, "unreadable": 1}
    assert first.per_class == {"happy": 2, "sad": 1}
    assert detector.calls == 4  # the damaged file never reaches the detector
    for path in out.glob("*/*.png"):
        with Image.open(path) as crop:
            assert (crop.size, crop.mode) == ((224, 224), "RGB")
    assert sorted(p.name for p in (out / "happy").iterdir()) == [
        HAPPY_1.replace(".jpg", ".png"),
        HAPPY_2.replace(".jpg", ".png"),
    ]
    written = json.loads((out / SUMMARY_FILE).read_text("utf-8"))
    assert written["skipped_counts"] == first.skipped_counts
    assert written["skipped"]["no_face"][0]["path"].endswith(SAD_NO_FACE)

    again = preprocess(aihub, out, size=224, detector=detector, progress=False)  # type: ignore[arg-type]
    assert (again.written, again.existing, detector.calls) == (0, 3, 4)
    assert again.skipped_counts == first.skipped_counts
    assert not list(out.rglob(".*partial"))

    with pytest.raises(SettingsMismatch, match="size 224 there, 64 now"):
        preprocess(aihub, out, size=64, detector=detector, progress=False)  # type: ignore[arg-type]


def test_preprocess_writes_small_greyscale_crops_for_compact_models(
    aihub: Path, tmp_path: Path, engine
) -> None:
    out = tmp_path / "grey"
    summary = preprocess(
        aihub,
        out,
        size=48,
        color="grayscale",
        image_format="jpg",
        limit_per_class=1,
        detector=engine.detector,
        progress=False,
    )
    assert summary.written == 2
    crops = sorted(out.glob("*/*.jpg"))
    assert [p.parent.name for p in crops] == ["happy", "sad"]
    for path in crops:
        with Image.open(path) as crop:
            assert (crop.size, crop.mode) == ((48, 48), "L")


def test_preprocess_command_fails_in_one_line_on_bad_input(tmp_path: Path, aihub: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["preprocess", str(tmp_path / "nowhere"), str(tmp_path / "out")])
    assert missing.exit_code == 2
    assert missing.stderr.strip().endswith("nowhere does not exist.")
    tiny = runner.invoke(app, ["preprocess", str(aihub), str(tmp_path / "out"), "--size", "4"])
    assert tiny.exit_code == 2 and "size must be within 8..1024, got 4" in tiny.stderr
    assert "Traceback" not in missing.output + tiny.output
