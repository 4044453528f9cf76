"""Shift each label's prior so a jointly trained model answers every dataset in its own words.

Joint training mixes datasets whose label sets differ, so the model's prior for a label depends
on how often its datasets were drawn, and labels that no dataset holds together (fear and
anxious, surprise and embarrassed) are never weighed against each other on the same face. The
result is a model whose FER faces drift to AIHub-only answers, or the reverse. A per-label
offset on the logits (the classic prior-shift correction) moves that boundary without
touching what the network sees. The offsets are searched on the validation faces of every
dataset at once, for what train-joint selects on (every floor met, then the pooled or mean
accuracy), and folded into the output layer's bias: the served model is the same network
with ten different numbers.

Ten numbers fitted on the very faces that report them flatter the model, so the search is
also cross-fitted: each dataset's val is split into two halves of whole groups (people,
films), the offsets are searched on one half and score the other, and the other way round.
Those cross-fitted accuracies, over every val face, are the honest ones; the shipped offsets
are searched on both halves together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.joint import (
    Dataset,
    on_union,
    rank,
    refuse_unknown_datasets,
    score_dataset,
    with_totals,
)
from training.joint_recipe import SELECTIONS, UNION_LABELS
from training.metrics import classification_report
from training.sources import GROUPINGS, halves

log = logging.getLogger(__name__)

# Offsets tried for each label in turn (natural-log units): e^-2 to e^+1 times its prior.
STEPS = np.round(np.arange(-2.0, 1.01, 0.125), 3)


@dataclass(frozen=True)
class ValAnswers:
    """One dataset's val faces as the search sees them."""

    name: str
    views: np.ndarray  # (2, N, labels): the model's answers on each face and its mirror image
    truth: np.ndarray  # (N,): each face's label, as a column of the model's answers
    second_half: np.ndarray  # (N,) bool: the calibration half its group fell in

    def where(self, mask: np.ndarray) -> ValAnswers:
        return ValAnswers(self.name, self.views[:, mask], self.truth[mask], self.second_half[mask])

    def right(self, offsets: np.ndarray) -> np.ndarray:
        return shifted(self.views, offsets).argmax(axis=-1) == self.truth


def val_answers(
    classifier,
    data: Dataset,
    grouping: str,
    labels: Sequence[str] = UNION_LABELS,
    answer_labels: Sequence[str] | None = None,
) -> ValAnswers:
    """The classifier's answers on a dataset's val faces, halved by `grouping` of file names.

    `labels` are the answers' columns; a classifier that answers fewer (`answer_labels`, e.g.
    moodnet's seven) has its answers placed in the union's columns, zero elsewhere."""
    group_of = GROUPINGS[grouping]
    faces = data.val.images.astype(np.float32) / 255.0
    views = np.stack(
        [classifier.predict(v, batch_size=256, verbose=0) for v in (faces, faces[:, :, ::-1])]
    )
    if answer_labels is not None:
        views = np.stack([on_union(view, answer_labels) for view in views])
    truth = np.array([labels.index(data.val.label_names[i]) for i in data.val.labels])
    groups = [group_of(Path(f)) for f in data.val.files]
    return ValAnswers(data.name, views, truth, halves(groups))


def shifted(views: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The flip-averaged answers after adding `offsets` to every view's logits."""
    logits = np.log(np.clip(views, 1e-7, 1.0)) + offsets
    logits -= logits.max(axis=-1, keepdims=True)
    probabilities = np.exp(logits)
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    return probabilities.mean(axis=0)


def scores(answers: Sequence[ValAnswers], offsets: np.ndarray) -> dict[str, Any]:
    return with_totals(
        {a.name: {"accuracy": float(a.right(offsets).mean()), "n": len(a.truth)} for a in answers}
    )


def search_offsets(
    answers: Sequence[ValAnswers],
    labels: Sequence[str],
    floors: dict[str, float] | None = None,
    by: str = "pooled",
    rounds: int = 4,
) -> np.ndarray:
    """Coordinate ascent over the labels' offsets, a grid step at a time (see `_objective`)."""
    floors = floors or {}
    offsets = np.zeros(len(labels))
    best = _objective(scores(answers, offsets), floors, by)
    for _ in range(rounds):
        improved = False
        for i in range(len(labels)):
            for step in STEPS:
                trial = offsets.copy()
                trial[i] = step
                score = _objective(scores(answers, trial), floors, by)
                if score > best:
                    best, offsets, improved = score, trial, True
        if not improved:
            break
    log.info("Offsets %s: %s", _named(labels, offsets), best)
    return offsets


def _objective(
    scores: dict[str, Any], floors: dict[str, float], by: str
) -> tuple[bool, float, float]:
    """train-joint's `rank`, with the floors' shortfall between: below a floor, a step that
    comes nearer wins even when it costs the other datasets, so the search can reach it."""
    met, value = rank(scores, floors, by)
    shortfall = sum(max(0.0, v - scores[name]["accuracy"]) for name, v in floors.items())
    return met, -shortfall, value


def cross_fitted(
    answers: Sequence[ValAnswers],
    labels: Sequence[str],
    floors: dict[str, float] | None = None,
    by: str = "pooled",
) -> dict[str, Any]:
    """Every val face scored with offsets searched on the other half of its dataset's groups."""
    views = {a.name: a.views for a in answers}

    def fit(held_out: bool) -> np.ndarray:
        return search_offsets(
            [a.where(a.second_half != held_out) for a in answers], labels, floors, by
        )

    def answer(offsets: np.ndarray, name: str, mask: np.ndarray) -> np.ndarray:
        return shifted(views[name][:, mask], offsets).argmax(axis=-1)

    result, fitted = cross_fit(answers, labels, fit, answer)
    result["offsets_by_half"] = [_named(labels, offsets) for offsets in fitted]
    return result


def cross_fit(
    answers: Sequence[ValAnswers],
    labels: Sequence[str],
    fit: Callable[[bool], Any],
    answer: Callable[[Any, str, np.ndarray], np.ndarray],
) -> tuple[dict[str, Any], list[Any]]:
    """Each half of every val (`second_half` True or False) answered by what was fitted on the
    other half: `fit(held_out)` fits on the faces whose half is not `held_out`, `answer(fitted,
    name, mask)` answers dataset `name`'s faces under `mask`. Returns the reports over every
    face and what each half fitted."""
    answered = {a.name: np.zeros(len(a.truth), dtype=int) for a in answers}
    fitted = []
    for held_out in (False, True):
        fitted.append(fit(held_out))
        for a in answers:
            mask = a.second_half == held_out
            answered[a.name][mask] = answer(fitted[-1], a.name, mask)
    reports = {a.name: _accuracy_report(a.truth, answered[a.name], labels) for a in answers}
    return with_totals(reports), fitted


def _accuracy_report(
    truth: np.ndarray, answered: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    report = classification_report(truth, answered, labels)  # macro-F1 over the labels present
    return {
        "accuracy": round(report["accuracy"], 4),
        "macro_f1": round(report["macro_f1"], 4),
        "n": report["n"],
    }


def _named(labels: Sequence[str], offsets: np.ndarray) -> dict[str, float]:
    return {k: float(v) for k, v in zip(labels, offsets, strict=True)}


def fold_into_bias(classifier, offsets: np.ndarray) -> None:
    """Add the offsets to the output layer's bias: softmax(Wx + b + offsets)."""
    layer = classifier.get_layer("emotion")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + offsets.astype(bias.dtype)])


def calibrate(
    bundle: Path,
    data_dirs: Sequence[Path],
    out_dir: Path,
    *,
    groupings: dict[str, str] | None = None,
    floors: dict[str, float] | None = None,
    by: str = "pooled",
) -> dict[str, Any]:
    """Search the offsets for a train-joint bundle, and write the shifted model's bundle.

    `groupings` names how each dataset's val is halved for cross-fitting (a `GROUPINGS` key;
    datasets not named: every file its own group, right for FER2013's one face a person)."""
    from ml.models import resolve_model
    from training.bundle import ModelCard, write_bundle
    from training.compact import classifier_from, with_flip_averaging
    from training.joint import JointRecipe, load_dataset

    groupings, floors = groupings or {}, floors or {}
    check_options([d.name for d in data_dirs], groupings, floors, by)
    spec, model_file = resolve_model(bundle)
    classifier = classifier_from(model_file)
    recipe = JointRecipe(input_size=spec.input_size[0], color=spec.color)
    datasets = [load_dataset(d, recipe, with_train=False) for d in data_dirs]
    answers = [
        val_answers(classifier, d, groupings.get(d.name, "file"), spec.labels) for d in datasets
    ]
    before = scores(answers, np.zeros(len(spec.labels)))
    honest = cross_fitted(answers, spec.labels, floors, by)
    offsets = search_offsets(answers, spec.labels, floors, by)
    fold_into_bias(classifier, offsets)
    # The folded model answers what the shifted views say (a test checks it): no second pass.
    metrics = with_totals(
        {
            d.name: score_dataset(shifted(a.views, offsets), d.val, spec.labels)
            for d, a in zip(datasets, answers, strict=True)
        }
    )
    metrics["label_offsets"] = _named(spec.labels, offsets)
    metrics["accuracy_before_offsets"] = {
        d.name: round(before[d.name]["accuracy"], 4) for d in datasets
    }
    metrics["cross_fitted"] = honest
    card = ModelCard(
        data=f"{bundle}, with per-label offsets searched on: " + ", ".join(map(str, data_dirs)),
        split="each dataset's val/ folder (the same faces that selected the epoch); "
        "`cross_fitted` scores each half of every val's groups with offsets searched on the "
        "other half, the honest numbers",
        metrics=metrics,
        settings={"groupings": groupings, "floors": floors, "select": by, "steps": STEPS.tolist()},
    )
    write_bundle(out_dir, with_flip_averaging(classifier), spec, card)
    return metrics


def check_options(
    names: Sequence[str], groupings: dict[str, str], floors: dict[str, float], by: str
) -> None:
    """Refuse what would fail late or do nothing, before anything is loaded."""
    refuse_unknown_datasets(names, {"--group": groupings, "--floor": floors})
    bad = sorted(g for g in groupings.values() if g not in GROUPINGS)
    if bad:
        raise ValueError(f"--group takes one of {', '.join(GROUPINGS)}, got {bad}")
    if by not in SELECTIONS:
        raise ValueError(f"--select takes one of {', '.join(SELECTIONS)}, got {by!r}")
