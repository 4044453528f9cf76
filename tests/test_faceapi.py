"""face-api.js's expression network rebuilt in Keras from its published TensorFlow.js weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.faceapi import (
    FACEAPI_LABELS,
    INPUT_SIDE,
    WeightsError,
    faceapi_head,
    faceapi_trunk,
    published_weights,
    read_tfjs_weights,
)
from training.joint import UNION_LABELS, JointRecipe


def _manifest(folder: Path, quantized: np.ndarray, plain: np.ndarray, extra: bytes = b"") -> Path:
    """Two tensors over two binary shards, the first 8-bit quantized, as TensorFlow.js writes."""
    blob = quantized.astype(np.uint8).tobytes() + plain.astype(np.float32).tobytes() + extra
    (folder / "shard1").write_bytes(blob[:5])
    (folder / "shard2").write_bytes(blob[5:])
    groups = [
        {
            "paths": ["shard1", "shard2"],
            "weights": [
                {
                    "name": "a/filters",
                    "shape": [2, 3],
                    "dtype": "float32",
                    "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0},
                },
                {"name": "a/bias", "shape": [2], "dtype": "float32"},
            ],
        }
    ]
    path = folder / "model-weights_manifest.json"
    path.write_text(json.dumps(groups))
    return path


def test_tfjs_weights_are_read_by_name_and_dequantized(tmp_path: Path) -> None:
    path = _manifest(tmp_path, np.arange(6), np.array([1.5, -2.0]))
    tensors = read_tfjs_weights(path)
    np.testing.assert_allclose(tensors["a/filters"], (np.arange(6) * 0.5 - 1.0).reshape(2, 3))
    np.testing.assert_allclose(tensors["a/bias"], [1.5, -2.0])


@pytest.mark.parametrize(
    ("damage", "message"),
    [("short", "ends before a/bias"), ("long", "4 bytes left"), ("json", "not a readable")],
)
def test_damaged_tfjs_weights_are_refused_naming_the_file(
    tmp_path: Path, damage: str, message: str
) -> None:
    path = _manifest(tmp_path, np.arange(6), np.array([1.5, -2.0]), extra=b"\0" * 4)
    if damage == "short":
        (tmp_path / "shard2").write_bytes((tmp_path / "shard2").read_bytes()[:-8])
    elif damage == "json":
        path.write_text("{not json")
    with pytest.raises(WeightsError, match=message) as caught:
        read_tfjs_weights(path)
    assert str(path) in str(caught.value)


def _published_answers(faces: np.ndarray) -> np.ndarray:
    """face-api.js's own softmax over FACEAPI_LABELS, on faces scaled to 0..1."""
    weights = published_weights()
    features = faceapi_trunk(weights).predict(faces, verbose=0)
    kernel, bias = faceapi_head(weights)
    logits = features @ kernel + bias
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_the_published_network_reads_a_smiling_face_as_happy(astronaut: np.ndarray) -> None:
    smiling = astronaut[40:190, 165:285]  # her face, as the detector frames it
    face = Image.fromarray(smiling).resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.BILINEAR)
    faces = np.asarray(face, np.float32)[None] / 255.0
    answers = _published_answers(np.concatenate([faces, faces[:, :, ::-1]]))
    assert [FACEAPI_LABELS[i] for i in answers.argmax(axis=1)] == ["happy", "happy"]
    assert answers[:, FACEAPI_LABELS.index("happy")].min() > 0.5


def test_the_faceapi_backbone_keeps_its_seven_answers_and_warm_starts_the_rest() -> None:
    from training.joint import WARM_START_OFFSET, union_head_model

    recipe = JointRecipe(backbone="faceapi", input_size=INPUT_SIDE, color="rgb")
    model = union_head_model(None, recipe)
    faces = np.random.default_rng(0).random((3, INPUT_SIDE, INPUT_SIDE, 3)).astype(np.float32)
    union = model.predict(faces, verbose=0)
    own = _published_answers(faces)
    # The seven shared labels: face-api.js's answers, rescaled by the three new labels' share.
    shared = [UNION_LABELS.index(name) for name in FACEAPI_LABELS]
    np.testing.assert_allclose(
        union[:, shared] / union[:, shared].sum(axis=1, keepdims=True), own, rtol=1e-4, atol=1e-6
    )
    hurt_over_sad = union[:, UNION_LABELS.index("hurt")] / union[:, UNION_LABELS.index("sad")]
    np.testing.assert_allclose(hurt_over_sad, np.exp(WARM_START_OFFSET), rtol=1e-4)


def test_a_grey_trunk_answers_what_the_colour_one_answers_on_grey_faces() -> None:
    weights = published_weights()
    grey = np.random.default_rng(1).random((2, INPUT_SIDE, INPUT_SIDE, 1)).astype(np.float32)
    np.testing.assert_allclose(
        faceapi_trunk(weights, channels=1).predict(grey, verbose=0),
        faceapi_trunk(weights).predict(np.repeat(grey, 3, axis=-1), verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_random_faceapi_trunk_has_the_published_shapes() -> None:
    published = faceapi_trunk(published_weights())
    random = faceapi_trunk()
    assert [w.shape for w in random.weights] == [w.shape for w in published.weights]
    assert random.output_shape == (None, 256)


@pytest.mark.parametrize(("side", "color"), [(48, "grayscale"), (64, "rgb")])
def test_the_faceapi_backbone_refuses_any_other_side(side: int, color: str) -> None:
    with pytest.raises(ValueError, match="--input-size 112"):
        JointRecipe(backbone="faceapi", input_size=side, color=color)
    with pytest.raises(ValueError, match="backbone must be one of compact, faceapi"):
        JointRecipe(backbone="vgg")


@pytest.mark.slow
def test_a_faceapi_run_writes_a_servable_bundle_that_says_where_it_started(tmp_path: Path) -> None:
    from ml.loader import load_emotion_model
    from training.joint import train_joint

    rng = np.random.default_rng(0)
    datasets = []
    for name, classes in (("fer", ("angry", "neutral")), ("korean", ("hurt", "happy"))):
        for side, count in (("train", 8), ("val", 2)):
            for label in classes:
                folder = tmp_path / name / side / label
                folder.mkdir(parents=True)
                for i in range(count):
                    pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / f"p{i}_{label}.png")
        datasets.append(tmp_path / name)
    recipe = JointRecipe(
        backbone="faceapi", input_size=INPUT_SIDE, color="rgb", epochs=1, batch_size=8, name="fa"
    )
    metrics = train_joint(datasets, tmp_path / "run", recipe=recipe)
    assert metrics["epochs_run"] == 1 and metrics["fer"]["n"] == metrics["korean"]["n"] == 4
    model = load_emotion_model(tmp_path / "run" / "bundle")
    assert model.spec.input_size == (INPUT_SIDE, INPUT_SIDE) and model.spec.color == "rgb"
    assert "face-api.js's pretrained expression network fine-tuned" in model.spec.description
    answers = model.predict([rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)])
    assert answers.shape == (1, len(UNION_LABELS))
