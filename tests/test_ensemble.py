"""`moodbot ensemble`: one bundle that averages several models, loadable by the engine."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bot.cli import app
from ml.engine import EmotionEngine
from ml.faces import crop_face
from ml.loader import load_emotion_model
from ml.models import KerasEmotionModel, preprocess_faces
from training.ensemble import EnsembleError, ensemble_spec


@pytest.fixture(scope="module")
def face_crops(engine: EmotionEngine, astronaut: np.ndarray, grace_hopper_jpeg: bytes) -> list:
    from ml.decode import decode_image

    hopper = decode_image(grace_hopper_jpeg).pixels
    return [crop_face(image, engine.detector.detect(image)[0]) for image in (astronaut, hopper)]


def test_ensemble_bundle_averages_its_members(tmp_path: Path, face_crops: list) -> None:
    out = tmp_path / "duo"
    result = CliRunner().invoke(
        app, ["ensemble", str(out), "--model", "moodnet", "--model", "mini-xception"]
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"bundle.json", "model.keras", "MODEL_CARD.md"}

    ensemble = load_emotion_model(out)
    assert ensemble.spec.input_size == (64, 64)  # the larger member's input
    members = [load_emotion_model(name) for name in ("moodnet", "mini-xception")]
    expected = np.mean([m.predict(face_crops) for m in members], axis=0)
    got = ensemble.predict(face_crops)
    # Members see the face resized along a slightly different path (64 px, then 48 inside
    # the graph), so probabilities agree closely rather than exactly.
    np.testing.assert_allclose(got, expected, atol=0.06)
    assert list(got.argmax(axis=1)) == list(expected.argmax(axis=1))


def test_members_answer_over_the_union_of_their_labels_by_weight(face_crops: list) -> None:
    from training.ensemble import build_ensemble

    moodnet, joint = load_emotion_model("moodnet"), load_emotion_model("moodnet-joint")
    keras_model, spec = build_ensemble("pair", [moodnet, joint], [1.0, 3.0])
    # moodnet's seven first, then what only the joint model knows.
    assert spec.labels == (*moodnet.labels, "anxious", "hurt", "embarrassed")
    assert spec.labels == joint.labels
    assert "moodnet (0.25)" in spec.description and "(0.75)" in spec.description
    padded = np.zeros((len(face_crops), len(spec.labels)), np.float32)
    padded[:, : len(moodnet.labels)] = moodnet.predict(face_crops)
    expected = 0.25 * padded + 0.75 * joint.predict(face_crops)
    got = np.asarray(keras_model(preprocess_faces(spec, face_crops)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.sum(axis=1) == pytest.approx(1.0, abs=1e-5)


def test_a_colour_member_makes_the_ensemble_colour_and_grey_members_see_grey() -> None:
    from training.compact import compact_cnn
    from training.ensemble import build_ensemble
    from training.joint import GREY_FROM_RGB

    grey_net = compact_cnn(24, 7, width=4, blocks=(1, 1, 1), channels=1)
    colour_net = compact_cnn(24, 7, width=4, blocks=(1, 1, 1), channels=3)
    moodnet = load_emotion_model("moodnet")
    specs = [
        dataclasses.replace(moodnet.spec, name=name, input_size=(24, 24), color=color)
        for name, color in (("grey", "grayscale"), ("colour", "rgb"))
    ]
    nets = (grey_net, colour_net)
    members = [KerasEmotionModel(spec, net) for net, spec in zip(nets, specs, strict=True)]
    keras_model, spec = build_ensemble("mixed", members, [1.0, 3.0])
    assert spec.color == "rgb" and spec.channels == 3
    faces = np.random.default_rng(0).random((2, 24, 24, 3)).astype(np.float32)
    expected = 0.25 * grey_net.predict((faces @ GREY_FROM_RGB)[..., None], verbose=0)
    expected += 0.75 * colour_net.predict(faces, verbose=0)
    np.testing.assert_allclose(np.asarray(keras_model(faces)), expected, rtol=1e-5, atol=1e-6)
    assert ensemble_spec("x", specs[:1] * 2).color == "grayscale"


@pytest.mark.parametrize(
    ("weights", "message"), [([1.0], "1 weights for 2 models"), ([1.0, 0.0], "positive")]
)
def test_weights_are_one_positive_number_a_member(weights: list, message: str) -> None:
    from training.ensemble import build_ensemble

    moodnet = load_emotion_model("moodnet")
    with pytest.raises(EnsembleError, match=message):
        build_ensemble("x", [moodnet, moodnet], weights)


def test_a_weight_that_is_not_a_number_is_a_clear_cli_error(tmp_path: Path) -> None:
    args = ["ensemble", str(tmp_path / "x"), "--model", "moodnet=lots", "--model", "moodnet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--model takes MODEL or MODEL=WEIGHT, got 'moodnet=lots'" in result.output


def test_members_share_one_crop_framed_between_theirs() -> None:
    moodnet = load_emotion_model("moodnet").spec
    tight = dataclasses.replace(moodnet, name="tight", crop_margin=0.0)
    loose = dataclasses.replace(moodnet, name="loose", crop_margin=0.3)
    assert ensemble_spec("x", [tight, loose]).crop_margin == 0.15


def test_one_member_is_a_clear_cli_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ensemble", str(tmp_path / "x"), "--model", "moodnet"])
    assert result.exit_code == 2
    assert "at least two models" in result.output
    assert not (tmp_path / "x" / "model.keras").exists()


def test_two_runs_of_one_architecture_combine(face_crops: list) -> None:
    from training.ensemble import build_ensemble

    moodnet = load_emotion_model("moodnet")
    # The same network twice: its model name repeats, and the mean is the model itself.
    keras_model, spec = build_ensemble("twins", [moodnet, load_emotion_model("moodnet")])
    assert spec.input_size == moodnet.spec.input_size
    batch = preprocess_faces(spec, face_crops)
    np.testing.assert_allclose(
        np.asarray(keras_model(batch)), moodnet.predict(face_crops), rtol=1e-5, atol=1e-6
    )
