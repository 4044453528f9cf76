"""The seed's VGG-Face recipe: AIHub photos -> preprocess -> train an epoch -> bundle -> predict."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from typer.testing import CliRunner

from ml.loader import load_emotion_model
from tests.conftest import GRACE_HOPPER, encode
from training.bundle import CARD_FILE
from training.cli import app
from training.preprocess import preprocess
from training.vggface import save_vggface_weights, vggface_vgg16
from training.vggface_train import (
    CURVES_FILE,
    HISTORY_FILE,
    VGGFaceTrainConfig,
    build_head,
    cached_features,
    stratified_split,
    train_vggface,
)

SIDE = 32  # the smallest input the backbones take: fast, with the published layer shapes


def variants(photo: Image.Image) -> list[Image.Image]:
    """A few distinct photos of one face: mirrored, darker, brighter."""
    return [
        photo,
        ImageOps.mirror(photo),
        ImageEnhance.Brightness(photo).enhance(0.7),
        ImageEnhance.Brightness(photo).enhance(1.2),
    ]


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, engine) -> Path:
    """Face crops preprocessed from a tiny AIHub-layout set with Korean names and JSON."""
    root = tmp_path_factory.mktemp("aihub")
    people = {
        "기쁨": Image.fromarray(astronaut),
        "중립": Image.open(io.BytesIO(GRACE_HOPPER.read_bytes())).convert("RGB"),
    }
    for emotion, photo in people.items():
        (root / emotion).mkdir()
        records = []
        for i, image in enumerate(variants(photo)):
            name = f"{i:04x}_여_30_{emotion}_실내_2020010{i}.jpg"
            (root / emotion / name).write_bytes(encode(image))
            records.append({"filename": name, "faceExp_uploader": emotion})
        (root / f"{emotion}.json").write_text(json.dumps(records, ensure_ascii=False), "utf-8")
    out = tmp_path_factory.mktemp("crops")
    summary = preprocess(root, out, size=48, detector=engine.detector, progress=False)
    assert summary.per_class == {"happy": 4, "neutral": 4}
    return out


@pytest.fixture
def colours(tmp_path: Path) -> Path:
    """Three classes of noisy, differently tinted squares."""
    rng = np.random.default_rng(0)
    for label, tint in (("angry", (200, 0, 0)), ("happy", (0, 200, 0)), ("sad", (0, 0, 200))):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 55, (40, 40, 3)) + np.array(tint)
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "data" / label / f"{i}.png")
    return tmp_path / "data"


def test_frozen_backbone_trains_the_head_on_cached_features_into_a_bundle(
    crops: Path, tmp_path: Path, astronaut: np.ndarray
) -> None:
    # One full batch per epoch: a smaller last batch would trace the training step again.
    config = VGGFaceTrainConfig(input_size=SIDE, epochs=1, batch_size=6)
    result = train_vggface(crops, tmp_path / "bundle", config, progress=False)
    assert not result.features_cached
    assert result.metrics["val_n"] == 2 and result.metrics["epochs_run"] == 1
    for name in (CARD_FILE, CURVES_FILE, HISTORY_FILE, "bundle.json", "model.keras"):
        assert (tmp_path / "bundle" / name).is_file()
    card = (tmp_path / "bundle" / CARD_FILE).read_text("utf-8")
    assert "happy 4, neutral 4" in card and "80/20 split, seed 1337: 6 train / 2 validation" in card
    [features] = (tmp_path / "bundle-work").glob("features-resnet50-*.npy")
    assert np.load(features).shape == (8, 1, 1, 2048)

    model = load_emotion_model(tmp_path / "bundle")
    spec = model.spec
    assert (spec.labels, spec.input_size, spec.color) == (("happy", "neutral"), (32, 32), "rgb")
    assert spec.normalization == "vggface2"
    probabilities = model.predict([astronaut[60:260, 150:350]])
    assert probabilities.shape == (1, 2) and probabilities.sum() == pytest.approx(1.0, abs=1e-5)

    # A second run finds the features on disk and never runs the backbone.
    files = [Path(f) for f in json.loads(features.with_suffix(".json").read_text())["files"]]
    cached, hit = cached_features(None, spec, files, config, tmp_path / "bundle-work", False)
    assert hit and np.array_equal(cached, np.load(features))


def test_fine_tuning_starts_from_a_local_weight_file(colours: Path, tmp_path: Path) -> None:
    weights = save_vggface_weights(
        vggface_vgg16(include_top=False, input_shape=(SIDE, SIDE, 3)),
        tmp_path / "rcmalli_vggface_tf_notop_vgg16.h5",
    )
    config = VGGFaceTrainConfig(
        architecture="vgg16",
        weights=weights,
        mode="finetune",
        input_size=SIDE,
        epochs=1,
        batch_size=9,
        flip=True,
    )
    result = train_vggface(colours, tmp_path / "bundle", config, progress=False)
    assert result.metrics["val_n"] == 3 and set(result.history) >= {"loss", "val_accuracy"}
    card = (tmp_path / "bundle" / CARD_FILE).read_text("utf-8")
    assert "initialised from rcmalli_vggface_tf_notop_vgg16.h5" in card
    model = load_emotion_model(tmp_path / "bundle")
    assert model.labels == ("angry", "happy", "sad")
    assert model.spec.normalization == "vggface1"  # the means VGG16's VGGFace weights expect
    assert model.predict([np.zeros((40, 40, 3), np.uint8)]).shape == (1, 3)


def test_the_seed_head_and_split() -> None:
    head = build_head((1, 1, 2048), 6)
    assert [layer.name for layer in head.layers] == [
        "features",
        "flatten",
        "fc1",
        "fc2",
        "fc3",
        "emotion",
    ]
    assert [head.get_layer(n).units for n in ("fc1", "fc2", "fc3", "emotion")] == [
        1024,
        512,
        512,
        6,
    ]
    assert head.get_layer("fc2").kernel_regularizer.get_config() == {"l1": pytest.approx(0.001)}
    assert head.get_layer("fc3").kernel_regularizer.get_config() == {"l2": pytest.approx(0.001)}
    files = {"a": [Path(f"a{i}") for i in range(10)], "b": [Path(f"b{i}") for i in range(3)]}
    train, val = stratified_split(files, ("a", "b"), 0.2, seed=1)
    assert (len(train), len(val)) == (10, 3) and sorted(val.labels.tolist()) == [0, 0, 1]


def test_train_command_fails_in_one_line_on_bad_input(colours: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["train-vggface", str(tmp_path / "nowhere"), str(tmp_path / "b")])
    assert missing.exit_code == 2 and "nowhere does not exist" in missing.stderr
    no_weights = runner.invoke(
        app, ["train-vggface", str(colours), str(tmp_path / "b"), "--weights", "missing.h5"]
    )
    assert no_weights.exit_code == 2
    assert (
        no_weights.stderr.strip() == "moodbot train-vggface: Weight file missing.h5 does not exist."
    )
    too_small = runner.invoke(
        app, ["train-vggface", str(colours), str(tmp_path / "b"), "--input-size", "16"]
    )
    assert too_small.exit_code == 2 and "input_size must be >= 32, got 16" in too_small.stderr
