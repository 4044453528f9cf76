"""`moodbot eval` on generated images and two colour-reading fake models whose answers we know."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ml.models import BundleSpec
from tests.conftest import encode
from training.bundle import MODEL_FILE, ModelCard, write_bundle
from training.cli import app
from training.evaluate import (
    EvalError,
    evaluate,
    format_report,
    save_confusion_png,
    save_predictions_csv,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
RED_WITH_BLUE = (255, 0, 40)  # still red, but blue beats green for a tie-free second choice


def colour_model(directory: Path, labels: tuple[str, ...], channel_of: dict[str, int]) -> Path:
    """A bundle that answers the label wired to the image's strongest colour channel."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(len(labels), activation="softmax")
    model = keras.Model(inputs, dense(x))
    kernel = np.zeros((3, len(labels)), np.float32)
    for label, channel in channel_of.items():
        kernel[channel, labels.index(label)] = 20.0
    dense.set_weights([kernel, np.zeros(len(labels), np.float32)])
    spec = BundleSpec(
        name=directory.name,
        labels=labels,
        input_size=(8, 8),
        color="rgb",
        normalization="zero_to_one",
        model_file=MODEL_FILE,
    )
    return write_bundle(directory, model, spec, ModelCard(data="none", split="none"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    first = colour_model(
        root / "rgb", ("angry", "happy", "sad"), {"angry": 0, "happy": 1, "sad": 2}
    )
    # Knows no anger; reads red as neutral. Shares happy and sad with the first.
    second = colour_model(
        root / "bgr", ("sad", "neutral", "happy"), {"sad": 2, "neutral": 0, "happy": 1}
    )
    return first, second


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folders named by aliases, two classes neither model knows, and one damaged file."""
    root = tmp_path_factory.mktemp("eval-set")
    folders = {
        "anger": [RED, RED, RED, GREEN],
        "happiness": [GREEN, GREEN],
        "sadness": [BLUE, BLUE, RED_WITH_BLUE],
        "fearful": [BLUE, GREEN],
        "Surprised": [RED],
    }
    for folder, colours in folders.items():
        (root / folder).mkdir()
        for i, colour in enumerate(colours):
            Image.new("RGB", (20, 20), colour).save(root / folder / f"{i}.png")
    (root / "happiness" / "broken.jpg").write_bytes(b"not an image")
    return root


def test_one_model_gives_the_confusion_matrix_through_aliases(
    dataset: Path, models: tuple[Path, Path]
) -> None:
    report = evaluate(dataset, [models[0]], aligned=True, progress=False)
    [result] = report.results
    assert result.labels == ("angry", "happy", "sad")
    assert result.confusion == [[3, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert (result.n, result.accuracy) == (9, pytest.approx(7 / 9))
    assert result.macro_f1 == pytest.approx((0.75 + 0.8 + 0.8) / 3)
    assert result.per_class["angry"] == {
        "precision": 0.75,
        "recall": 0.75,
        "f1": 0.75,
        "support": 4,
        "no_face": 0,
    }
    assert result.skipped_classes == {"fear": 2, "surprise": 1}
    assert [Path(p).name for p, _ in report.unreadable] == ["broken.jpg"]
    assert result.ms_per_face is not None and result.ms_per_face > 0


def test_models_side_by_side_and_their_ensemble_over_shared_labels(
    dataset: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    report = evaluate(dataset, list(models), aligned=True, tta_flip=True, progress=False)
    _, second, ensemble = report.results
    assert second.labels == ("sad", "neutral", "happy")
    assert second.confusion == [[2, 1, 0], [0, 0, 0], [0, 0, 2]]
    assert second.skipped_classes == {"angry": 4, "fear": 2, "surprise": 1}
    assert (ensemble.model, ensemble.labels) == ("ensemble", ("happy", "sad"))
    assert ensemble.confusion == [[2, 0], [0, 3]]
    assert (ensemble.n, ensemble.accuracy, ensemble.macro_f1) == (5, 1.0, 1.0)
    png = save_confusion_png(report.results, tmp_path / "confusion.png")
    with Image.open(png) as image:
        assert image.width > image.height > 100


def test_bundles_with_the_same_model_name_are_labelled_by_their_paths(
    dataset: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    twin = tmp_path / "twin"
    twin.mkdir()
    twin_bundle = colour_model(
        twin / models[0].name, ("angry", "happy", "sad"), {"angry": 0, "happy": 1, "sad": 2}
    )
    report = evaluate(dataset, [models[0], twin_bundle, models[1]], aligned=True, progress=False)
    assert [r.model for r in report.results] == [
        str(models[0]),
        str(twin_bundle),
        models[1].name,
        "ensemble",
    ]


def test_the_full_pipeline_counts_a_photo_without_a_face_as_a_miss(
    tmp_path: Path, models: tuple[Path, Path], astronaut: np.ndarray, no_face_png: bytes, engine
) -> None:
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "astronaut.jpg").write_bytes(encode(astronaut))
    (tmp_path / "happy" / "gradient.png").write_bytes(no_face_png)
    report = evaluate(tmp_path, [models[0]], detector=engine.detector, progress=False)
    [result] = report.results
    assert [Path(p).name for p in report.no_face] == ["gradient.png"]
    assert result.n == 2 and result.accuracy <= 0.5
    assert result.per_class["happy"]["no_face"] == 1
    assert result.no_face == [0, 1, 0]
    assert sum(map(sum, result.confusion)) == 1


def test_eval_command_prints_one_json_object_per_model_and_the_ensemble_last(
    dataset: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    args = ["eval", str(dataset), "--aligned", "--json", "--png", str(tmp_path / "c.png")]
    for model in models:
        args += ["--model", str(model)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    objects = json.loads(result.stdout)
    assert [o["model"] for o in objects] == ["rgb", "bgr", "ensemble"]
    keys = ["model", "n", "accuracy", "macro_f1", "per_class", "confusion", "ms_per_face"]
    keys += ["images", "accuracy_all", "skipped_classes"]  # issue 23: every image counts
    assert all(list(o) == keys for o in objects)
    assert objects[0]["confusion"] == {
        "labels": ["angry", "happy", "sad"],
        "matrix": [[3, 1, 0], [0, 2, 0], [1, 0, 2]],
        "no_face": [0, 0, 0],
    }
    assert "skipped: fear (2 images), surprise (1 image)" in result.stderr
    assert (tmp_path / "c.png").is_file()


def test_eval_fails_in_one_line_on_a_missing_folder_or_model(tmp_path: Path, dataset: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["eval", str(tmp_path / "nowhere"), "--aligned"])
    assert missing.exit_code == 2
    assert "nowhere does not exist" in missing.stderr and "Traceback" not in missing.output
    bad_model = runner.invoke(app, ["eval", str(dataset), "--model", str(tmp_path), "--aligned"])
    assert bad_model.exit_code == 1
    assert "Unknown model" in bad_model.stderr
    with pytest.raises(EvalError, match="at least one model"):
        evaluate(dataset, [], aligned=True)


def test_every_image_counts_unknown_classes_and_unreadable_files_as_wrong(
    dataset: Path, models: tuple[Path, Path], tmp_path: Path
) -> None:
    report = evaluate(dataset, list(models), aligned=True, progress=False)
    first, second, ensemble = report.results
    # 13 files: 7 right for rgb (3 anger, 2 happiness, 2 sadness); fear, surprise and the
    # damaged file are wrong for every model.
    assert [r.images for r in report.results] == [13, 13, 13]
    assert first.accuracy_all == pytest.approx(7 / 13)
    assert second.accuracy_all == pytest.approx(4 / 13)  # happy 2, sad 2: no angry to give
    assert ensemble.accuracy_all == pytest.approx(5 / 13)
    assert first.to_json()["skipped_classes"] == {"fear": 2, "surprise": 1}
    text = format_report(report)
    assert text.splitlines()[0].split()[1:3] == ["images", "all-images"]
    assert text.splitlines()[1].split()[:3] == ["rgb", "13", f"{7 / 13:.4f}"]

    rows = list(csv.DictReader(save_predictions_csv(report.results, tmp_path / "p.csv").open()))
    assert len(rows) == 3 * 13 and list(rows[0]) == [
        "model", "path", "truth", "predicted", "confidence"
    ]  # fmt: skip
    mine = {Path(r["path"]).parent.name + "/" + Path(r["path"]).name: r for r in rows[:13]}
    assert (mine["fearful/0.png"]["truth"], mine["fearful/0.png"]["predicted"]) == ("fear", "sad")
    assert mine["happiness/broken.jpg"]["predicted"] == "unreadable"
    assert mine["happiness/broken.jpg"]["confidence"] == ""
    assert float(mine["anger/0.png"]["confidence"]) > 0.9


def test_eval_command_writes_the_predictions(dataset: Path, models: tuple[Path, Path], tmp_path):
    out = tmp_path / "predictions.csv"
    args = ["eval", str(dataset), "--aligned", "--model", str(models[0]), "--predictions", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split()[:3] == ["rgb", "13", f"{7 / 13:.4f}"]
    assert len(out.read_text().splitlines()) == 1 + 13
