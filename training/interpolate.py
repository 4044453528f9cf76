"""Mix a fine-tuned model's weights with those it started from (WiSE-FT), at the share the
vals choose.

A train-joint model began as its base (moodnet) with a softmax over the union labels
(`union_head_model`), so the two share every layer and every weight lines up:
`(1 - share) * base + share * tuned` is again a model of the same shape, batch-norm statistics
mixed too. Moving the share trades what fine-tuning learnt (Korean and film faces) against
what the base knew better (FER2013) without any training: each share costs one pass over the
val faces.

A share is one number for every layer, or one number per block of the network (its stem,
each stage, the output layer: the weighted layers grouped by the name before the first `_`),
so early layers can stay nearer the base while late ones follow the fine-tuned model.

The share is chosen on the vals for what train-joint selects on (every floor met, then the
pooled or mean accuracy), from the shares given. A choice made on the faces that report it
flatters it a little, so the choice is also cross-fitted, as in `moodbot calibrate`: each val
is halved by whole groups (people, films), the share is chosen on one half and scores the
other.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.calibrate import ValAnswers, check_options, cross_fit, scores, val_answers
from training.joint import bundled, rank, score_dataset, union_head_model, with_totals
from training.joint_recipe import UNION_LABELS, JointRecipe

log = logging.getLogger(__name__)

# A share: one number for every layer, or one per block of the network (see `blocks`).
Share = tuple[float, ...]

SHARES: tuple[Share, ...] = tuple((round(s, 2),) for s in np.arange(0.0, 1.001, 0.05))


def blocks(model: keras.Model) -> list[str]:
    """The network's blocks in order: its weighted layers grouped by the name before the first
    `_` (stem, stage1, stage2, stage3, emotion for the compact network)."""
    return list(dict.fromkeys(_block(layer) for layer in _weighted(model)))


def _block(layer: keras.Layer) -> str:
    return layer.name.split("_")[0]


def _weighted(model: keras.Model) -> list[keras.Layer]:
    return [layer for layer in model.layers if layer.weights]


def share_name(share: Share) -> str:
    """A share as the card and the log print it: 0.60, or 0.40/0.40/0.70/0.80/0.80 by block."""
    return "/".join(f"{s:.2f}" for s in share)


def _check_blocks(share: Share, names: Sequence[str]) -> None:
    """A share per block must name every block."""
    if len(share) not in (1, len(names)):
        raise ValueError(
            f"--share {','.join(f'{s:g}' for s in share)}: give one share, or one per block "
            f"({len(names)}: {', '.join(names)})"
        )


def _per_layer(model: keras.Model, share: Share) -> dict[str, float]:
    """Each weighted layer's share, by name."""
    names = blocks(model)
    _check_blocks(share, names)
    by_block = dict(zip(names, share * len(names) if len(share) == 1 else share, strict=True))
    return {layer.name: by_block[_block(layer)] for layer in _weighted(model)}


def mix_into(
    target: keras.Model,
    base: keras.Model,
    tuned: keras.Model,
    share: Share,
    tuned_only: Sequence[int] = (),
) -> None:
    """Set `target`'s weights (a model shaped like `tuned`) to the mix, layer by layer name,
    each block at its share.

    The output columns `tuned_only` (labels the base never learnt, whose outputs there are
    only copies of a twin's) are the tuned model's: mixing them would just dilute them."""
    for name, share_here in _per_layer(tuned, share).items():
        tuned_weights = tuned.get_layer(name).get_weights()
        base_weights = base.get_layer(name).get_weights()
        if name == "emotion":
            for b, t in zip(base_weights, tuned_weights, strict=True):
                b[..., tuned_only] = t[..., tuned_only]  # kernel (features, labels), bias
        mixed = [
            (1.0 - share_here) * b + share_here * t
            for b, t in zip(base_weights, tuned_weights, strict=True)
        ]
        target.get_layer(name).set_weights(mixed)


def choose(answers: dict[Share, Sequence[ValAnswers]], floors: dict[str, float], by: str) -> Share:
    """The share whose answers rank best (see train-joint's `rank`); ties go to the larger
    mean share, nearer the fine-tuned model."""
    return max(
        answers, key=lambda share: (*rank(_scores(answers[share]), floors, by), np.mean(share))
    )


def _scores(answers: Sequence[ValAnswers]) -> dict[str, Any]:
    return scores(answers, np.zeros(answers[0].views.shape[-1]))  # no label offsets


def cross_fitted(
    answers: dict[Share, Sequence[ValAnswers]],
    labels: Sequence[str],
    floors: dict[str, float],
    by: str,
) -> dict[str, Any]:
    """Every val face answered by the share chosen on the other half of its dataset's groups."""
    by_name = {share: {a.name: a for a in per_share} for share, per_share in answers.items()}

    def fit(held_out: bool) -> Share:
        halves = {
            share: [a.where(a.second_half != held_out) for a in per_share]
            for share, per_share in answers.items()
        }
        return choose(halves, floors, by)

    def answer(share: Share, name: str, mask: np.ndarray) -> np.ndarray:
        return by_name[share][name].views[:, mask].mean(axis=0).argmax(axis=-1)

    # Truth and halves are the same faces at every share: any share's answers carry them.
    result, chosen = cross_fit(next(iter(answers.values())), labels, fit, answer)
    result["share_by_half"] = [share_name(share) for share in chosen]
    return result


def interpolate(
    base_bundle: Path,
    tuned_bundle: Path,
    data_dirs: Sequence[Path],
    out_dir: Path,
    *,
    shares: Sequence[Share] = SHARES,
    groupings: dict[str, str] | None = None,
    floors: dict[str, float] | None = None,
    by: str = "pooled",
    name: str = "moodnet-blend",
) -> dict[str, Any]:
    """Score every share on every val, write the bundle of the share chosen, and return its
    metrics: the chosen model's full reports, every share's accuracies, the cross-fitted ones."""
    from ml.models import resolve_model
    from training.bundle import ModelCard, write_bundle
    from training.compact import classifier_from, with_flip_averaging
    from training.joint import load_dataset

    groupings, floors = groupings or {}, floors or {}
    check_options([d.name for d in data_dirs], groupings, floors, by)
    shares = [tuple(share) for share in shares]
    _check_shares(shares)
    spec, tuned_file = resolve_model(tuned_bundle)
    if tuple(spec.labels) != UNION_LABELS:
        raise ValueError(f"{tuned_bundle}: not a train-joint model (labels {spec.labels})")
    tuned = classifier_from(tuned_file)
    for share in shares:  # before any face is read
        _check_blocks(share, blocks(tuned))
    recipe = JointRecipe(input_size=spec.input_size[0], color=spec.color, name=spec.name)
    # The base as fine-tuning first saw it: its own labels' outputs, each new label's copied
    # from its twin a logit lower.
    base_model = bundled(base_bundle, recipe)
    base = union_head_model(base_model, recipe)
    tuned_only = [i for i, label in enumerate(UNION_LABELS) if label not in base_model.labels]
    datasets = [load_dataset(d, recipe, with_train=False) for d in data_dirs]
    model = keras.models.clone_model(tuned)

    answers = {}
    for share in shares:
        mix_into(model, base, tuned, share, tuned_only)
        answers[share] = [
            val_answers(model, d, groupings.get(d.name, "file"), spec.labels) for d in datasets
        ]
        log.info("Share %s: %s", share_name(share), accuracies(answers[share]))
    share = choose(answers, floors, by)
    mix_into(model, base, tuned, share, tuned_only)

    metrics = with_totals(
        {
            d.name: score_dataset(a.views.mean(axis=0), d.val, spec.labels)
            for d, a in zip(datasets, answers[share], strict=True)
        }
    )
    metrics["share"] = share_name(share)
    metrics["by_share"] = {share_name(s): accuracies(answers[s]) for s in shares}
    metrics["cross_fitted"] = cross_fitted(answers, spec.labels, floors, by)
    mixed_as = _in_words(share, blocks(tuned))
    card = ModelCard(
        data=f"{tuned_bundle} and {base_bundle} with their weights mixed, {mixed_as} "
        "the share chosen on: " + ", ".join(map(str, data_dirs)),
        split="each dataset's val/ folder (the same faces that chose the share); "
        "`cross_fitted` scores each half of every val's groups with the share chosen on the "
        "other half, the honest numbers",
        metrics=metrics,
        settings={
            "shares": [share_name(s) for s in shares],
            "blocks": blocks(tuned),
            "labels_from_tuned_only": [UNION_LABELS[i] for i in tuned_only],
            "groupings": groupings,
            "floors": floors,
            "select": by,
        },
    )
    description = (
        f"{tuned_bundle.name} and {base_bundle.name} with their weights mixed "
        f"({mixed_as} the labels {base_bundle.name} lacks wholly "
        f"{tuned_bundle.name}'s), {model.count_params():,} parameters, "
        f"{spec.input_size[0]}x{spec.input_size[1]} {spec.color}; outputs averaged over the "
        "face and its mirror image."
    )
    spec = dataclasses.replace(spec, name=name, description=description)
    write_bundle(out_dir, with_flip_averaging(model), spec, card)
    return metrics


def accuracies(answers: Sequence[ValAnswers]) -> dict[str, float]:
    """Each val's accuracy with the mean and pooled ones, as the card and the log print them."""
    return {
        name: round(s["accuracy"] if isinstance(s, dict) else s, 4)
        for name, s in _scores(answers).items()
    }


def _in_words(share: Share, names: Sequence[str]) -> str:
    """The share in the card's words: the fine-tuned model's share, or each block's."""
    if len(share) == 1:
        return f"{share[0]:.2f} of the fine-tuned model's;"
    each = ", ".join(f"{n} {s:.2f}" for n, s in zip(names, share, strict=True))
    return f"the fine-tuned model's share by block: {each};"


def _check_shares(shares: Sequence[Share]) -> None:
    if not shares:
        raise ValueError("--share names no share")
    bad = [share_name(share) for share in shares if not all(0.0 <= s <= 1.0 for s in share)]
    if bad:
        raise ValueError(f"--share must lie in 0..1 (0 the base, 1 the fine-tuned model): {bad}")
