"""Choose an ensemble's member weights on the vals (`moodbot ensemble --choose-on`).

Each member answers every val face and its mirror image once, at the side it was trained on
(a 48 px member reads the files at 48, a 64 px one at 64), its answers placed over the union
of labels. A weighting is then only a weighted sum of those answers, so every weighting on
the grid costs nothing more, and the one chosen is what train-joint selects on (every floor
met, then the pooled or mean accuracy). As with `moodbot interpolate`, a choice made on the
faces that report it flatters it, so it is cross-fitted too: each val is halved by whole
groups (people, films), the weights are chosen on one half and score the other.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.calibrate import ValAnswers, check_options, val_answers
from training.data import FaceArrays
from training.interpolate import accuracies, choose, cross_fitted, share_name
from training.joint import bundled, load_dataset, score_dataset, with_totals
from training.joint_recipe import UNION_LABELS, JointRecipe

log = logging.getLogger(__name__)

Weights = tuple[float, ...]


def weight_grid(members: int, step: float) -> list[Weights]:
    """Every weighting of `members` in steps of `step` that sums to 1, each member at least one
    step (a member weighted 0 would be dropped, not weighed)."""
    steps = round(1.0 / step) if 0 < step <= 0.5 else 0
    if members < 2 or not steps or abs(steps * step - 1.0) > 1e-9:
        raise ValueError(f"--step must divide 1 into at least two parts, got {step}")
    return [
        tuple(round(count * step, 6) for count in counts)
        for counts in itertools.product(range(1, steps + 1), repeat=members)
        if sum(counts) == steps
    ]


def member_answers(
    bundle: str | Path, data_dirs: Sequence[Path], groupings: dict[str, str]
) -> tuple[list[ValAnswers], list[FaceArrays]]:
    """One member's answers on every dataset's val faces, read at the member's own side, and
    those val faces' labels and files."""
    from ml.models import resolve_model

    spec, _ = resolve_model(bundle)
    recipe = JointRecipe(input_size=spec.input_size[0], color=spec.color, name=spec.name)
    member = bundled(bundle, recipe, adapt=False)
    answers, vals = [], []
    for data_dir in data_dirs:
        data = load_dataset(data_dir, recipe, with_train=False)
        grouping = groupings.get(data.name, "file")
        answers.append(val_answers(member.classifier, data, grouping, UNION_LABELS, spec.labels))
        vals.append(data.val)
    log.info("%s answered %d val faces", bundle, sum(len(a.truth) for a in answers))
    return answers, vals


def weighed(per_member: Sequence[Sequence[ValAnswers]], weights: Weights) -> list[ValAnswers]:
    """The members' answers summed by `weights`, dataset by dataset."""
    return [
        ValAnswers(
            first.name,
            sum(w * m[i].views for w, m in zip(weights, per_member, strict=True)),
            first.truth,
            first.second_half,
        )
        for i, first in enumerate(per_member[0])
    ]


def choose_weights(
    members: Sequence[str | Path],
    data_dirs: Sequence[Path],
    *,
    groupings: dict[str, str] | None = None,
    floors: dict[str, float] | None = None,
    by: str = "pooled",
    step: float = 0.1,
) -> tuple[Weights, dict[str, Any]]:
    """The grid's best weighting for what train-joint selects on, and the metrics: the chosen
    weighting's full reports, every weighting's accuracies, the cross-fitted ones."""
    groupings, floors = groupings or {}, floors or {}
    check_options([d.name for d in data_dirs], groupings, floors, by)
    grid = weight_grid(len(members), step)
    per_member, vals = [], None
    for member in members:
        answers, member_vals = member_answers(member, data_dirs, groupings)
        if vals is not None and [v.files for v in member_vals] != [v.files for v in vals]:
            raise ValueError(f"{member} read other val faces than the members before it")
        per_member.append(answers)
        vals = member_vals
    answers = {weights: weighed(per_member, weights) for weights in grid}
    chosen = choose(answers, floors, by)
    metrics = with_totals(
        {
            a.name: score_dataset(a.views.mean(axis=0), val, UNION_LABELS)
            for a, val in zip(answers[chosen], vals or [], strict=True)
        }
    )
    metrics["weights"] = share_name(chosen)
    metrics["by_weights"] = {share_name(w): accuracies(per) for w, per in answers.items()}
    honest = cross_fitted(answers, UNION_LABELS, floors, by)
    honest["weights_by_half"] = honest.pop("share_by_half")
    metrics["cross_fitted"] = honest
    log.info("Weights %s chosen of %d", metrics["weights"], len(grid))
    return chosen, metrics
