"""Training over datasets with different label sets, and splitting them by person or film."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from training.data import FaceArrays
from training.joint import (
    UNION_LABELS,
    JointRecipe,
    joint_targets,
    restricted_crossentropy,
    score_dataset,
    train_joint,
)
from training.sources import film_of, group_split, person_of, split_folder

FER_SIDE = ("angry", "fear", "neutral")
KOREAN_SIDE = ("anxious", "hurt", "happy")


def _faces_folder(root: Path, classes: tuple[str, ...], per_class: int, seed: int) -> Path:
    """Class folders of small RGB images whose brightness says the class (learnable fast)."""
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            level = 20 + 40 * (FER_SIDE + KOREAN_SIDE).index(name)
            pixels = np.clip(rng.normal(level, 8, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"p{i % 5}_{name}_{i}.png")
    return root


def test_person_and_film_names() -> None:
    assert person_of(Path("abc123_여_30_기쁨_공공시설_2021-001.jpg")) == "abc123"
    assert film_of(Path("HarryPotter_Deathly_Hallows_1_000431200_00000002.jpg")) == "HarryPotter"
    assert film_of(Path("OceansThirteen-010619400_00000012.jpg")) == "Oceans"
    assert film_of(Path("OceansEleven_001234500_00000003.jpg")) == "Oceans"


def test_group_split_keeps_each_group_on_one_side_and_is_stable() -> None:
    groups = [f"person{i % 40}" for i in range(400)]
    mask = group_split(groups, 0.25)
    for group in set(groups):
        sides = {bool(v) for g, v in zip(groups, mask, strict=True) if g == group}
        assert len(sides) == 1
    assert 0.1 < mask.mean() < 0.4
    np.testing.assert_array_equal(mask, group_split(list(reversed(groups)), 0.25)[::-1])
    with pytest.raises(ValueError, match="share"):
        group_split(groups, 1.5)


def test_split_folder_links_whole_people(tmp_path: Path) -> None:
    root = _faces_folder(tmp_path / "aihub", KOREAN_SIDE, 20, seed=1)
    counts = split_folder(root, tmp_path / "split", "person", 0.4)
    train = {person_of(p) for p in (tmp_path / "split" / "train").glob("*/*")}
    val = {person_of(p) for p in (tmp_path / "split" / "val").glob("*/*")}
    assert train and val and not train & val
    assert counts["train"]["images"] + counts["val"]["images"] == 60
    assert counts["val"]["groups"] == len(val)
    again = split_folder(root, tmp_path / "split", "person", 0.4)  # re-running replaces it
    assert again == counts
    with pytest.raises(ValueError, match="grouping"):
        split_folder(root, tmp_path / "other", "colour")


def test_targets_restrict_each_face_to_its_own_labels() -> None:
    data = FaceArrays(np.zeros((2, 4, 4, 1), np.uint8), np.array([0, 1]), KOREAN_SIDE, {})
    rows = joint_targets(data, smoothing=0.0)
    k = len(UNION_LABELS)
    target, mask = rows[:, :k], rows[:, k:]
    assert target[0, UNION_LABELS.index("anxious")] == 1.0
    assert target[1, UNION_LABELS.index("hurt")] == 1.0
    assert mask[0].sum() == 3 and mask[0, UNION_LABELS.index("neutral")] == 0
    smoothed = joint_targets(data, smoothing=0.3)[:, :k]
    np.testing.assert_allclose(smoothed.sum(axis=1), 1.0, rtol=1e-6)
    assert smoothed[0, UNION_LABELS.index("neutral")] == 0  # smoothing stays within the mask
    assert smoothed[0, UNION_LABELS.index("happy")] == pytest.approx(0.1)


def test_restricted_loss_ignores_labels_outside_the_mask() -> None:
    k = len(UNION_LABELS)
    target = np.zeros((1, k), np.float32)
    target[0, 0] = 1.0
    mask = np.zeros((1, k), np.float32)
    mask[0, :2] = 1.0
    y_true = np.concatenate([target, mask], axis=1)
    # Two answers that differ only outside the mask have the same loss: -log(0.2 / (0.2 + 0.2)).
    a = np.full((1, k), 0.6 / (k - 2), np.float32)
    a[0, :2] = 0.2
    b = np.zeros((1, k), np.float32)
    b[0, :2], b[0, 5] = 0.2, 0.6
    restricted = restricted_crossentropy(0.0)
    for answers in (a, b):
        assert float(np.asarray(restricted(y_true, answers))[0]) == pytest.approx(
            np.log(2), rel=1e-4
        )
    # Blended with the plain softmax, mass outside the mask costs again: -log 0.2 at weight 1.
    union = restricted_crossentropy(1.0)
    assert float(np.asarray(union(y_true, a))[0]) == pytest.approx(-np.log(0.2), rel=1e-4)
    half = float(np.asarray(restricted_crossentropy(0.5)(y_true, a))[0])
    assert half == pytest.approx((np.log(2) - np.log(0.2)) / 2, rel=1e-4)


def test_score_counts_every_image_and_reports_foreign_answers() -> None:
    data = FaceArrays(np.zeros((4, 4, 4, 1), np.uint8), np.array([0, 0, 1, 2]), KOREAN_SIDE, {})
    probabilities = np.zeros((4, len(UNION_LABELS)), np.float32)
    for row, answer in enumerate(["anxious", "neutral", "hurt", "fear"]):
        probabilities[row, UNION_LABELS.index(answer)] = 1.0
    report = score_dataset(probabilities, data)
    assert report["accuracy"] == 0.5  # neutral and fear are wrong answers, not skipped
    # Second choices inside the dataset's labels: right for the neutral face, wrong for fear.
    probabilities[1, UNION_LABELS.index("anxious")] = 0.2
    probabilities[3, UNION_LABELS.index("anxious")] = 0.2
    assert score_dataset(probabilities, data)["own_labels_accuracy"] == 0.75
    assert report["foreign_answers"] == {"share": 0.5, "by_label": {"fear": 1, "neutral": 1}}
    assert set(report["per_class"]) == set(KOREAN_SIDE)


@pytest.mark.slow
@pytest.mark.parametrize("color", ["grayscale", "rgb"])
def test_tiny_joint_run_learns_both_label_sets(tmp_path: Path, color: str) -> None:
    datasets = []
    for name, classes, seed in (("fer", FER_SIDE, 2), ("korean", KOREAN_SIDE, 3)):
        for side, count in (("train", 24), ("val", 8)):
            _faces_folder(tmp_path / name / side, classes, count, seed + len(side))
        datasets.append(tmp_path / name)
    recipe = JointRecipe(
        input_size=24,
        color=color,
        width=4,
        epochs=4,
        batch_size=8,
        learning_rate=1e-2,
        warmup_epochs=0,
        erasing=0.0,
        per_epoch={"fer": 48},
        average_epochs=2,
        name="tiny",
    )
    metrics = train_joint(datasets, tmp_path / "run", recipe=recipe)
    spec = json.loads((tmp_path / "run" / "bundle" / "bundle.json").read_text())
    assert spec["labels"] == list(UNION_LABELS) and spec["color"] == color
    assert metrics["fer"]["accuracy"] >= 0.6 and metrics["korean"]["accuracy"] >= 0.6
    lines = (tmp_path / "run" / "epochs.jsonl").read_text().splitlines()
    assert len(lines) == metrics["epochs_run"] == 4
    averaging = metrics["weight_averaging"]
    assert averaging["epochs_averaged"] == 2
    kept = (
        averaging["averaged"] if metrics["selected_epoch"] is None else averaging["selected_epoch"]
    )
    assert {n: metrics[n]["accuracy"] for n in ("fer", "korean")} == kept
    assert metrics["selected_epoch"] is None or 1 <= metrics["selected_epoch"] <= 4

    # Prior offsets on the written bundle: a bundle again, with honest (cross-fitted) scores.
    from training.calibrate import calibrate

    shifted = calibrate(
        tmp_path / "run" / "bundle",
        datasets,
        tmp_path / "cal",
        groupings={"korean": "person"},
        floors={"fer": 0.5},
    )
    assert (tmp_path / "cal" / "bundle.json").is_file()
    assert set(shifted["label_offsets"]) == set(UNION_LABELS)
    for name, n in (("fer", 24), ("korean", 24)):
        assert shifted["cross_fitted"][name]["n"] == shifted[name]["n"] == n
    assert shifted["accuracy_before_offsets"] == {
        n: round(metrics[n]["accuracy"], 4) for n in ("fer", "korean")
    }

    # Weights mixed with a base's: every share scored, the chosen one written, cross-fitted.
    from training.interpolate import interpolate

    mixed = interpolate(
        _fer_bundle(tmp_path / "base"),
        tmp_path / "run" / "bundle",
        datasets,
        tmp_path / "mixed",
        shares=[(0.0,), (0.5,), (1.0,), (0.0, 0.0, 0.0, 1.0, 1.0)],
        groupings={"korean": "person"},
    )
    assert (tmp_path / "mixed" / "bundle.json").is_file()
    assert list(mixed["by_share"]) == ["0.00", "0.50", "1.00", "0.00/0.00/0.00/1.00/1.00"]
    assert mixed["by_share"]["1.00"] == {
        **{n: round(metrics[n]["accuracy"], 4) for n in ("fer", "korean")},
        "mean_accuracy": metrics["mean_accuracy"],
        "pooled_accuracy": metrics["pooled_accuracy"],
    }
    chosen = mixed["by_share"][mixed["share"]]
    assert chosen["pooled_accuracy"] == max(
        s["pooled_accuracy"] for s in mixed["by_share"].values()
    )
    assert {n: mixed[n]["n"] for n in ("fer", "korean")} == {"fer": 24, "korean": 24}
    halves = mixed["cross_fitted"]["share_by_half"]
    assert len(halves) == 2 and all(half in mixed["by_share"] for half in halves)
    # A share per block must name every block; nothing is written.
    with pytest.raises(
        ValueError, match=re.escape("one per block (5: stem, stage1, stage2, stage3, emotion)")
    ):
        interpolate(
            tmp_path / "base",
            tmp_path / "run" / "bundle",
            datasets,
            tmp_path / "bad",
            shares=[(0.5, 0.5)],
        )
    assert not (tmp_path / "bad").exists()

    # An ensemble whose weights the vals choose: the FER-only base and the joint run.
    from bot.cli import app

    args = ["ensemble", str(tmp_path / "duo"), "--model", str(tmp_path / "run" / "bundle")]
    args += ["--model", str(tmp_path / "base"), "--step", "0.25", "--group", "korean=person"]
    args += ["--choose-on", str(datasets[0]), "--choose-on", str(datasets[1])]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "duo" / "bundle.json").read_text())
    assert manifest["color"] == color  # a colour run makes a colour ensemble; the base sees grey
    chosen = manifest["extra"]["metrics"]
    assert list(chosen["by_weights"]) == ["0.25/0.75", "0.50/0.50", "0.75/0.25"]
    assert chosen["weights"] in chosen["by_weights"]
    assert chosen["by_weights"][chosen["weights"]]["pooled_accuracy"] == max(
        w["pooled_accuracy"] for w in chosen["by_weights"].values()
    )
    assert {n: chosen[n]["n"] for n in ("fer", "korean")} == {"fer": 24, "korean": 24}
    honest = chosen["cross_fitted"]
    assert {n: honest[n]["n"] for n in ("fer", "korean")} == {"fer": 24, "korean": 24}
    assert len(chosen["cross_fitted"]["weights_by_half"]) == 2
    assert manifest["labels"] == list(UNION_LABELS)  # the base's seven placed among the ten
    shares = [float(w) for w in chosen["weights"].split("/")]
    if len(set(shares)) == 1:
        assert manifest["description"].startswith("Mean of the probabilities of")
    else:
        assert f"({shares[0]:.2f})" in manifest["description"]


def test_weights_to_choose_from_sum_to_one_and_weigh_every_member() -> None:
    from training.weigh import weight_grid

    assert weight_grid(2, 0.25) == [(0.25, 0.75), (0.5, 0.5), (0.75, 0.25)]
    grid = weight_grid(3, 0.1)
    assert len(grid) == 36 and (0.1, 0.3, 0.6) in grid
    assert all(abs(sum(w) - 1.0) < 1e-9 and min(w) >= 0.1 for w in grid)
    for bad in (0.3, 0.0, 0.75):
        with pytest.raises(ValueError, match="--step must divide 1"):
            weight_grid(2, bad)


def test_chosen_weights_are_not_given_ones(tmp_path: Path) -> None:
    from bot.cli import app

    args = ["ensemble", str(tmp_path / "x"), "--model", "moodnet=0.3", "--model", "moodnet-joint"]
    result = CliRunner().invoke(app, [*args, "--choose-on", str(tmp_path)])
    assert result.exit_code == 2
    assert "give the --model members without them" in result.output
    assert not (tmp_path / "x").exists()


def _fer_bundle(directory: Path) -> Path:
    """An untrained tiny compact model over FER's seven labels, bundled like `moodbot train`'s."""
    from ml.labels import FER_LABELS
    from ml.models import BundleSpec
    from training.bundle import MODEL_FILE, ModelCard, write_bundle
    from training.compact import compact_cnn, with_flip_averaging

    net = compact_cnn(24, len(FER_LABELS), width=4, channels=1)
    spec = BundleSpec("base", FER_LABELS, (24, 24), "grayscale", "zero_to_one", MODEL_FILE)
    return write_bundle(directory, with_flip_averaging(net), spec, ModelCard("none", "none"))


def _margin_answers(name: str, truths: list[str], second_half: list[bool]):
    """Faces answered anxious 0.44 against fear 0.40, on both views; truth as given."""
    from training.calibrate import ValAnswers

    n = len(truths)
    answers = np.full((2, n, len(UNION_LABELS)), 0.02, np.float32)
    answers[:, :, UNION_LABELS.index("fear")] = 0.4
    answers[:, :, UNION_LABELS.index("anxious")] = 0.44
    truth = np.array([UNION_LABELS.index(t) for t in truths])
    return ValAnswers(name, answers, truth, np.array(second_half))


def test_label_offsets_undo_a_prior_that_favours_foreign_answers() -> None:
    from training.calibrate import fold_into_bias, scores, search_offsets, shifted

    # FER faces whose true label (fear) loses narrowly to anxious, a label FER never uses.
    k = len(UNION_LABELS)
    fer = _margin_answers("fer", ["fear"] * 6, [False, True] * 3)
    assert scores([fer], np.zeros(k))["fer"]["accuracy"] == 0.0

    offsets = search_offsets([fer], UNION_LABELS)
    assert fer.right(offsets).all()
    assert scores([fer], offsets)["pooled_accuracy"] == 1.0

    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(k, "softmax", name="emotion")])
    before = model.predict(np.ones((1, 3)), verbose=0)
    fold_into_bias(model, offsets)
    after = model.predict(np.ones((1, 3)), verbose=0)
    np.testing.assert_allclose(after, shifted(before[None], offsets), rtol=1e-4, atol=1e-6)


def test_cross_fitting_scores_each_half_with_the_other_halfs_offsets() -> None:
    from training.calibrate import cross_fitted, scores, search_offsets

    # One half's faces are fear, the other's anxious, under the same answers: an offset fitted
    # on all of them is right for half the faces; fitted on one half it is wrong for the other.
    mixed = _margin_answers("kor", ["fear"] * 4 + ["anxious"] * 4, [False] * 4 + [True] * 4)
    assert scores([mixed], search_offsets([mixed], UNION_LABELS))["kor"]["accuracy"] == 0.5
    honest = cross_fitted([mixed], UNION_LABELS)
    assert honest["kor"] == {"accuracy": 0.0, "macro_f1": 0.0, "n": 8}
    assert honest["pooled_accuracy"] == 0.0
    assert len(honest["offsets_by_half"]) == 2

    # Where both halves want the same shift, cross-fitting finds it for both.
    same = _margin_answers("fer", ["fear"] * 6, [False, True] * 3)
    assert cross_fitted([same], UNION_LABELS)["fer"]["accuracy"] == 1.0


def test_label_offsets_reach_a_floor_at_the_others_cost() -> None:
    from training.calibrate import scores, search_offsets

    small = _margin_answers("fer", ["fear"] * 2, [False, True])
    large = _margin_answers("kor", ["anxious"] * 6, [False, True] * 3)
    plain = search_offsets([small, large], UNION_LABELS)
    assert scores([small, large], plain)["kor"]["accuracy"] == 1.0  # more faces win
    floored = search_offsets([small, large], UNION_LABELS, floors={"fer": 1.0})
    result = scores([small, large], floored)
    assert result["fer"]["accuracy"] == 1.0 and result["kor"]["accuracy"] == 0.0


@pytest.mark.slow
def test_mixing_weights_moves_every_layer_from_base_to_tuned() -> None:
    import keras

    from training.compact import compact_cnn
    from training.interpolate import mix_into

    base, tuned = (compact_cnn(24, 3, width=4, blocks=(1, 1, 1), channels=1) for _ in range(2))
    target = keras.models.clone_model(tuned)
    for share in (0.0, 0.25, 1.0):
        mix_into(target, base, tuned, (share,))
        for b, t, m in zip(
            base.get_weights(), tuned.get_weights(), target.get_weights(), strict=True
        ):
            np.testing.assert_allclose(m, (1 - share) * b + share * t, rtol=1e-6, atol=1e-7)
    # A share per block: the stem's weights the base's, the output layer's the tuned model's.
    mix_into(target, base, tuned, (0.0, 0.5, 0.5, 0.5, 1.0))
    for layer in (layer for layer in tuned.layers if layer.weights):
        share = {"stem": 0.0, "emotion": 1.0}.get(layer.name.split("_")[0], 0.5)
        for b, t, m in zip(
            base.get_layer(layer.name).get_weights(),
            layer.get_weights(),
            target.get_layer(layer.name).get_weights(),
            strict=True,
        ):
            np.testing.assert_allclose(m, (1 - share) * b + share * t, rtol=1e-6, atol=1e-7)
    # A label the base never learnt keeps the tuned model's output at any share.
    mix_into(target, base, tuned, (0.0,), tuned_only=[2])
    (kernel, bias), (tuned_kernel, tuned_bias) = (
        m.get_layer("emotion").get_weights() for m in (target, tuned)
    )
    base_kernel = base.get_layer("emotion").get_weights()[0]
    np.testing.assert_array_equal(kernel[:, 2], tuned_kernel[:, 2])
    np.testing.assert_array_equal(bias[2], tuned_bias[2])
    np.testing.assert_array_equal(kernel[:, :2], base_kernel[:, :2])


def _answering(name: str, truth: list[str], answer: str, second_half: list[bool]):
    """ValAnswers whose every face is answered `answer` on both views."""
    from training.calibrate import ValAnswers

    views = np.full((2, len(truth), len(UNION_LABELS)), 0.01, np.float32)
    views[:, :, UNION_LABELS.index(answer)] = 0.9
    truths = np.array([UNION_LABELS.index(t) for t in truth])
    return ValAnswers(name, views, truths, np.array(second_half))


def test_the_share_chosen_meets_the_floor_then_raises_the_pooled_accuracy() -> None:
    from training.interpolate import choose

    halves = [False, True, False, True]
    answers = {  # at 0 the FER faces are right, at 1 the Korean ones, at 0.5 one of each half
        (0.0,): [
            _answering("fer", ["fear"] * 2, "fear", [False, True]),
            _answering("kor", ["hurt"] * 4, "sad", halves),
        ],
        (0.5,): [
            _answering("fer", ["fear"] * 2, "fear", [False, True]),
            _answering("kor", ["hurt", "hurt", "sad", "sad"], "hurt", halves),
        ],
        (1.0,): [
            _answering("fer", ["fear"] * 2, "anxious", [False, True]),
            _answering("kor", ["hurt"] * 4, "hurt", halves),
        ],
    }
    assert choose(answers, {}, "pooled") == (1.0,)  # 4 of 6 right
    assert choose(answers, {"fer": 1.0}, "pooled") == (0.5,)  # 4 of 6 with every FER face
    assert choose(answers, {"fer": 1.0}, "mean") == (0.5,)
    ties = {share: answers[(0.0,)] for share in ((0.2,), (0.4,), (0.1, 0.3, 0.5))}
    assert choose(ties, {}, "pooled") == (0.4,)  # the largest mean share, nearer the tuned model


def test_cross_fitting_scores_each_half_with_the_share_the_other_half_chose() -> None:
    from training.interpolate import cross_fitted

    # Half A (False) is right only at share 0, half B only at share 1.
    def at(share: float):
        truth = ["sad", "sad", "hurt", "hurt"]
        answer = "sad" if share == 0.0 else "hurt"
        return [_answering("kor", truth, answer, [False, False, True, True])]

    honest = cross_fitted({(0.0,): at(0.0), (1.0,): at(1.0)}, UNION_LABELS, {}, "pooled")
    # A chooses 0 and scores B with it (wrong), B chooses 1 and scores A with it (wrong).
    assert honest["share_by_half"] == ["1.00", "0.00"]
    assert honest["kor"]["accuracy"] == 0.0 and honest["kor"]["n"] == 4


def test_halves_keep_groups_whole_and_fill_both_sides() -> None:
    from training.sources import halves

    groups = ["a", "a", "b", "c", "c", "c", "d", "e"]
    mask = halves(groups)
    for g in set(groups):
        assert len({bool(m) for m, h in zip(mask, groups, strict=True) if h == g}) == 1
    assert mask.tolist() == halves(groups).tolist()  # stable
    assert sorted({bool(m) for m in halves(["x", "y"])}) == [False, True]  # two groups, two sides


def test_every_label_the_joint_model_can_answer_is_known_to_the_product() -> None:
    from ml.labels import EMOTIONS

    assert set(UNION_LABELS) <= set(EMOTIONS)
    assert len(set(UNION_LABELS)) == len(UNION_LABELS) == 10


@pytest.mark.slow
@pytest.mark.parametrize("name", ["moodnet-joint", "moodnet-blend"])
def test_the_shipped_joint_models_read_a_real_face_in_ten_labels(
    astronaut: np.ndarray, name: str
) -> None:
    from ml.loader import load_emotion_model
    from ml.models import resolve_model

    spec, _ = resolve_model(name)
    assert spec.labels == UNION_LABELS and spec.input_size == (48, 48)
    model = load_emotion_model(name)
    smiling = astronaut[40:190, 165:285]  # her face, as the detector frames it
    probabilities = model.predict([smiling, smiling[:, ::-1]])
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    assert [UNION_LABELS[i] for i in probabilities.argmax(axis=1)] == ["happy", "happy"]


def test_distilled_targets_mix_in_the_teachers_answer_within_the_mask() -> None:
    data = FaceArrays(np.zeros((1, 4, 4, 1), np.uint8), np.array([0]), FER_SIDE, {})
    teacher = np.zeros((1, len(UNION_LABELS)), np.float32)
    teacher[0, UNION_LABELS.index("fear")] = 0.6  # inside FER_SIDE
    teacher[0, UNION_LABELS.index("happy")] = 0.4  # outside it: dropped, the rest renormalised
    k = len(UNION_LABELS)
    target = joint_targets(data, 0.0, teacher=teacher, teacher_share=0.5)[0, :k]
    assert target[UNION_LABELS.index("angry")] == pytest.approx(0.5)
    assert target[UNION_LABELS.index("fear")] == pytest.approx(0.5)
    assert target[UNION_LABELS.index("happy")] == 0 and target.sum() == pytest.approx(1.0)
    plain = joint_targets(data, 0.0, teacher=teacher, teacher_share=0.0)[0, :k]
    assert plain[UNION_LABELS.index("angry")] == 1.0


def test_a_grey_model_adapted_to_colour_answers_what_the_grey_one_answers() -> None:
    from training.compact import compact_cnn
    from training.joint import GREY_FROM_RGB, adapted

    grey = compact_cnn(24, 7, width=4, blocks=(1, 2, 1), channels=1)
    rgb = adapted(grey, JointRecipe(input_size=24, color="rgb"))
    assert (
        rgb.input_shape == (None, 24, 24, 3)
        and rgb.count_params() == grey.count_params() + 2 * 9 * 4
    )
    faces = np.random.default_rng(0).random((3, 24, 24, 3)).astype(np.float32)
    as_grey = (faces @ GREY_FROM_RGB)[..., None]
    np.testing.assert_allclose(
        rgb.predict(faces, verbose=0), grey.predict(as_grey, verbose=0), rtol=1e-4, atol=1e-6
    )
    bigger = adapted(grey, JointRecipe(input_size=32, color="grayscale"))
    assert bigger.input_shape == (None, 32, 32, 1) and bigger.count_params() == grey.count_params()
    assert adapted(grey, JointRecipe(input_size=24)) is grey


def test_selection_prefers_epochs_that_reach_every_floor() -> None:
    from training.joint import SelectBest

    high = {"fer": {"accuracy": 0.65}, "korean": {"accuracy": 0.80}, "pooled_accuracy": 0.725}
    on_floor = {"fer": {"accuracy": 0.70}, "korean": {"accuracy": 0.60}, "pooled_accuracy": 0.65}
    floored, plain = SelectBest([], Path("unused"), {"fer": 0.70}), SelectBest([], Path("unused"))
    assert floored.rank(on_floor) > floored.rank(high)
    assert plain.rank(high) > plain.rank(on_floor)


def test_pooled_selection_weighs_every_val_image_alike() -> None:
    from training.joint import SelectBest

    # Epoch a: +3 faces on a 145-face val; epoch b: +40 faces on a 4,948-face one.
    def scores(small: int, large: int) -> dict:
        reports = {"films": (small, 145), "korean": (large, 4948)}
        out = {k: {"accuracy": r / n, "n": n} for k, (r, n) in reports.items()}
        out["mean_accuracy"] = (small / 145 + large / 4948) / 2
        out["pooled_accuracy"] = (small + large) / (145 + 4948)
        return out

    a, b = scores(82, 3149), scores(79, 3189)
    by_mean = SelectBest([], Path("unused"), by="mean")
    assert by_mean.rank(a) > by_mean.rank(b)
    pooled = SelectBest([], Path("unused"))  # the default
    assert pooled.rank(b) > pooled.rank(a)
    with pytest.raises(ValueError, match="select"):
        JointRecipe(select_by="median")


def test_train_joint_options_read_name_value_pairs() -> None:
    from training.cli import _pairs

    assert _pairs(["fer2013=0.7", "sfew=0.5"], "--floor", float) == {"fer2013": 0.7, "sfew": 0.5}
    assert _pairs(["aihub=6000"], "--per-epoch", int) == {"aihub": 6000}
    for bad in ("aihub", "=3", "aihub=many"):
        with pytest.raises(ValueError, match="--per-epoch takes NAME=INT"):
            _pairs([bad], "--per-epoch", int)
    assert _pairs(["sfew=film"], "--group", str) == {"sfew": "film"}
    with pytest.raises(ValueError, match="--group takes NAME=VALUE"):
        _pairs(["sfew"], "--group", str)
    with pytest.raises(ValueError, match="distill"):
        JointRecipe(distill={"fer2013": 1.5})


def test_per_dataset_options_must_name_a_given_dataset() -> None:
    from training.joint import check_dataset_names

    check_dataset_names(
        JointRecipe(per_epoch={"aihub": 10}, floor={"fer2013": 0.7}), ["aihub", "fer2013"]
    )
    for recipe, option in (
        (JointRecipe(per_epoch={"aihb": 10}), "--per-epoch"),
        (JointRecipe(distill={"fer": 0.5}), "--distill"),
        (JointRecipe(floor={"sfew": 0.5}), "--floor"),
    ):
        with pytest.raises(ValueError, match=option):
            check_dataset_names(recipe, ["aihub", "fer2013"])


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (["--share", "1.5"], "--share must lie in 0..1"),
        (
            ["--share", "0.2,1.5"],
            "--share must lie in 0..1 (0 the base, 1 the fine-tuned model): ['0.20/1.50']",
        ),
        (
            ["--share", "0.2,half"],
            "--share takes a number or comma-separated numbers, got '0.2,half'",
        ),
        (["--floor", "sfew=0.5"], "--floor names datasets that are not given: ['sfew']"),
        (["--group", "fer=face"], "--group takes one of person, film, file"),
        (["--select", "best"], "--select takes one of"),
    ],
)
def test_interpolate_refuses_bad_options_before_loading_anything(
    tmp_path: Path, options: list[str], says: str
) -> None:
    from typer.testing import CliRunner

    from training.cli import EXIT_BAD_INPUT, app

    missing = [str(tmp_path / name) for name in ("base", "tuned", "out")]
    result = CliRunner().invoke(
        app, ["interpolate", *missing, "--data", str(tmp_path / "fer"), *options]
    )
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert f"moodbot interpolate: {says}" in result.output
    assert not (tmp_path / "out").exists()


def test_a_start_model_keeps_each_label_it_knows_and_warm_starts_the_rest() -> None:
    from ml.labels import FER_LABELS
    from training.compact import compact_cnn
    from training.joint import Bundled, union_head_model

    faces = np.random.default_rng(0).integers(0, 255, (3, 24, 24, 1)).astype(np.uint8)
    scaled = faces.astype(np.float32) / 255.0
    recipe = JointRecipe(input_size=24)
    # A model that already answers the union, in another order: every answer carried over.
    union_net = compact_cnn(24, len(UNION_LABELS), width=4, blocks=(1, 1, 1), channels=1)
    reordered = tuple(reversed(UNION_LABELS))
    model = union_head_model(Bundled(union_net, reordered), recipe)
    np.testing.assert_allclose(
        model.predict(scaled, verbose=0),
        union_net.predict(scaled, verbose=0)[:, ::-1],
        rtol=1e-4,
        atol=1e-6,
    )
    # A FER model: its seven kept, anxious a logit under fear (its WARM_START twin).
    fer_net = compact_cnn(24, len(FER_LABELS), width=4, blocks=(1, 1, 1), channels=1)
    answers = union_head_model(Bundled(fer_net, FER_LABELS), recipe).predict(scaled, verbose=0)
    ratio = answers[:, UNION_LABELS.index("anxious")] / answers[:, UNION_LABELS.index("fear")]
    np.testing.assert_allclose(ratio, np.exp(-1.0), rtol=1e-4)
    # As a teacher, its answers land in the union's columns (none for labels it lacks).
    taught = Bundled(fer_net, FER_LABELS).answers(faces)
    assert taught.shape == (3, len(UNION_LABELS))
    np.testing.assert_allclose(taught.sum(axis=1), 1.0, rtol=1e-5)
    assert not taught[:, UNION_LABELS.index("hurt")].any()
    no_neutral = tuple(n for n in FER_LABELS if n != "neutral")
    with pytest.raises(ValueError, match="neutral"):
        union_head_model(Bundled(compact_cnn(24, 6, width=4, blocks=(1, 1, 1)), no_neutral), recipe)


def _fer_run_at_28(root: Path):
    """A small FER-labelled dataset loaded for a 28 px run, with its recipe."""
    from training.joint import load_dataset

    _faces_folder(root / "fer" / "train", FER_SIDE, 3, seed=4)
    _faces_folder(root / "fer" / "val", FER_SIDE, 1, seed=5)
    recipe = JointRecipe(input_size=28)
    return load_dataset(root / "fer", recipe), recipe


def _tiny_fer_teacher(side: int):
    from ml.labels import FER_LABELS
    from training.compact import compact_cnn
    from training.joint import Bundled

    return Bundled(compact_cnn(side, len(FER_LABELS), width=4, blocks=(1, 1, 1)), FER_LABELS)


def test_a_teacher_reads_the_training_faces_at_its_own_side(tmp_path: Path) -> None:
    from training.data import load_faces
    from training.joint import _train_faces_for

    data, recipe = _fer_run_at_28(tmp_path)
    teacher = _tiny_fer_teacher(24)
    faces = _train_faces_for(teacher, data, recipe)
    # The files loaded again at 24 px, in the same order: not the 28 px faces shrunk.
    expected = load_faces(tmp_path / "fer" / "train", data.labels, size=24).images
    np.testing.assert_array_equal(faces, expected)
    assert teacher.answers(faces).shape == (len(faces), len(UNION_LABELS))
    assert _train_faces_for(_tiny_fer_teacher(28), data, recipe) is data.train.images


def test_an_ensemble_teacher_weighs_its_members_each_at_its_own_side(tmp_path: Path) -> None:
    from training.data import load_faces
    from training.joint import Teacher

    data, recipe = _fer_run_at_28(tmp_path)
    small, large = _tiny_fer_teacher(24), _tiny_fer_teacher(28)
    taught = Teacher((small, large), (1.0, 3.0)).answers(data, recipe)
    at_24 = load_faces(tmp_path / "fer" / "train", data.labels, size=24).images
    expected = 0.25 * small.answers(at_24) + 0.75 * large.answers(data.train.images)
    np.testing.assert_allclose(taught, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(taught.sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="one each"):
        Teacher((small, large), (1.0,))
    with pytest.raises(ValueError, match="not all 0"):
        Teacher((small,), (0.0,))


def test_a_cached_teacher_answers_once_per_weights_and_faces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from training.joint import Bundled, Teacher

    data, recipe = _fer_run_at_28(tmp_path)
    weights_file = tmp_path / "model.keras"
    weights_file.write_bytes(b"the teacher's weights")
    member = replace(_tiny_fer_teacher(28), weights_file=weights_file)
    cache = tmp_path / "cache"
    first = Teacher((member,), (1.0,), cache).answers(data, recipe)
    assert len(list(cache.glob("*.npz"))) == 1
    # Answers kept at float16, the same on the first run as on every later one.
    np.testing.assert_allclose(first, member.answers(data.train.images), atol=1e-3)

    def no_network(self, images):
        raise AssertionError("the cached answers should have been read")

    monkeypatch.setattr(Bundled, "answers", no_network)
    np.testing.assert_array_equal(Teacher((member,), (1.0,), cache).answers(data, recipe), first)
    # Other weights (the file changed) or other faces are answered afresh, in their own file.
    weights_file.write_bytes(b"other weights")
    with pytest.raises(AssertionError, match="cached answers"):
        Teacher((member,), (1.0,), cache).answers(data, recipe)
    weights_file.write_bytes(b"the teacher's weights")
    with pytest.raises(AssertionError, match="cached answers"):
        member.cached_answers(data.train.images[::-1], cache)


def test_teacher_options_read_a_bundle_and_an_optional_weight() -> None:
    from training.cli import _teachers

    assert _teachers(["moodnet", "runs/a=b/bundle=0.6"]) == [
        (Path("moodnet"), 1.0),
        (Path("runs/a=b/bundle"), 0.6),
    ]
    assert _teachers(None) == []
    with pytest.raises(ValueError, match="BUNDLE=WEIGHT"):
        _teachers(["runs/x=heavy"])
