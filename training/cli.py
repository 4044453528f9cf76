"""Training commands: preprocess, train, download-weights, train-vggface, eval, ensemble.

Each command is also a plain function (`preprocess_command`, ...). Bad input (a missing
folder, a damaged weight file, an impossible option) ends with one line naming the file and
the reason and exit status 2; a failure such as a refused download ends with status 1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ml.quiet import import_tensorflow_quietly
from training.joint_recipe import JointRecipe
from training.options import recipe_from, with_recipe_options
from training.preprocess import CropSettings
from training.train import CompactRecipe
from training.vggface_recipe import VGGFaceTrainConfig

T = TypeVar("T", int, float)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# No name: `moodbot` merges these commands into its own (the moodbot.commands entry point).
app = typer.Typer(
    help="Prepare data, fetch VGG-Face weights, train and evaluate emotion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger(__name__)

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


class ArchitectureChoice(StrEnum):
    vgg16 = "vgg16"
    resnet50 = "resnet50"
    senet50 = "senet50"


@contextmanager
def _reported(command: str) -> Iterator[None]:
    """Turn the named failures into one line on stderr and an exit status; no traceback."""
    # Imported here: training.vggface_train loads Keras, and `moodbot --help` should not wait.
    from ml.errors import MLError
    from training.aihub import DatasetError
    from training.evaluate import EvalError
    from training.vggface import VGGFaceError
    from training.vggface_train import NotEnoughData, TrainError
    from training.weights import DownloadFailed

    try:
        yield
    except DownloadFailed as exc:
        typer.echo(f"moodbot {command}: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None
    except (DatasetError, EvalError, VGGFaceError, NotEnoughData, ValueError) as exc:
        typer.echo(f"moodbot {command}: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except (MLError, TrainError) as exc:
        typer.echo(f"moodbot {command}: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


def _logging(verbose: bool = False) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )


# --- preprocess ---------------------------------------------------------------------------------


@with_recipe_options(CropSettings)
def preprocess_command(
    input_dir: Annotated[Path, typer.Argument(help="AIHub layout, folder per class, or names.")],
    output_dir: Annotated[Path, typer.Argument(help="Where <label>/<name>.png crops go.")],
    retry_failed: Annotated[
        bool, typer.Option(help="Try again the images an earlier run found no face in.")
    ] = False,
    limit_per_class: Annotated[int | None, typer.Option(help="At most N images a class.")] = None,
    summary_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON.")
    ] = False,
    **knobs: Any,
) -> None:
    """Crop the largest face of every image (MTCNN, as the bot does); resumable.

    Every option after --json is a field of training.preprocess.CropSettings.
    """
    from training.preprocess import preprocess

    _logging()
    with _reported("preprocess"):
        settings = recipe_from(CropSettings, knobs)  # bad values fail here, before any work
        summary = preprocess(
            input_dir,
            output_dir,
            retry_failed=retry_failed,
            limit_per_class=limit_per_class,
            **asdict(settings),
        )
    if summary_json:
        typer.echo(json.dumps(summary.to_json(), ensure_ascii=False, indent=2))
    else:
        typer.echo(summary.describe())


# --- download-weights ---------------------------------------------------------------------------


def download_weights_command(
    architectures: Annotated[
        list[ArchitectureChoice] | None,
        typer.Argument(help="Which backbones (default: resnet50)."),
    ] = None,
    include_top: Annotated[
        bool, typer.Option(help="The files with the identity classifier (much larger).")
    ] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(envvar="MOODBOT_WEIGHTS_DIR", help="Default ~/.cache/moodbot/vggface."),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(envvar="MOODBOT_WEIGHTS_URL", help="A mirror of the v2.0 release files."),
    ] = None,
    sha256: Annotated[
        str | None, typer.Option(help="Expected sha256 (one architecture only).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Download even when a good copy is there.")] = False,
    timeout: Annotated[
        float, typer.Option(envvar="MOODBOT_DOWNLOAD_TIMEOUT", help="Seconds per network wait.")
    ] = 30.0,
) -> None:
    """Fetch keras-vggface's published weight files into the cache and verify them."""
    from training.weights import download_weights, weight_file_url

    _logging()
    chosen = [a.value for a in architectures or [ArchitectureChoice.resnet50]]
    with _reported("download-weights"):
        if sha256 and len(chosen) > 1:
            raise ValueError("--sha256 applies to one file: name one architecture.")
        for architecture in chosen:
            result = download_weights(
                architecture,
                include_top,
                cache_dir=cache_dir,
                url=weight_file_url(architecture, include_top, base_url or ""),
                sha256=sha256,
                force=force,
                timeout=timeout,
            )
            state = "downloaded" if result.downloaded else "already there"
            typer.echo(f"{result.path} ({state}, {result.size} bytes, sha256 {result.sha256})")


# --- train-vggface ------------------------------------------------------------------------------


@with_recipe_options(VGGFaceTrainConfig)
def train_vggface_command(
    data_dir: Annotated[Path, typer.Argument(help="Face crops, one folder per class.")],
    output_dir: Annotated[Path, typer.Argument(help="The model bundle to write.")],
    weights: Annotated[
        str | None,
        typer.Option(
            envvar="MOODBOT_VGGFACE_WEIGHTS",
            help="A keras-vggface notop .h5, or 'vggface' for the downloaded one; "
            "none trains from random weights.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    **knobs: Any,
) -> None:
    """Train the original project's VGG-Face model and write a bundle the bot can load.

    Every option after --quiet is a field of training.vggface_recipe.VGGFaceTrainConfig.
    """
    from training.vggface import resolve_weights
    from training.vggface_train import train_vggface

    _logging()
    with _reported("train-vggface"):
        architecture = knobs["architecture"] or VGGFaceTrainConfig.architecture
        resolved = resolve_weights(weights, architecture)
        config = recipe_from(VGGFaceTrainConfig, knobs, weights=resolved)
        result = train_vggface(data_dir, output_dir, config, progress=not quiet)
    metrics = result.metrics
    typer.echo(
        f"Wrote {result.bundle}: val accuracy {metrics['val_accuracy']}, "
        f"macro-F1 {metrics['val_macro_f1']} (best epoch {metrics['best_epoch']})."
    )


# --- train (the compact model) ------------------------------------------------------------------


@with_recipe_options(CompactRecipe)
def train_command(
    train_dir: Annotated[Path, typer.Argument(help="Faces, one folder per class (FER layout).")],
    output_dir: Annotated[Path, typer.Argument(help="Run folder: checkpoints, curves, bundle/.")],
    val_dir: Annotated[
        Path | None, typer.Option(help="Validation faces; default: 10% of train, stratified.")
    ] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Continue from this bundle's weights.")
    ] = None,
    **knobs: Any,
) -> None:
    """Train the compact CNN from scratch (the CPU-friendly default model) into a bundle.

    Every option after --init-from is a field of training.train.CompactRecipe.
    """
    from training.train import train_compact

    _logging()
    with _reported("train"):
        distilling = knobs.get("distill_weight") is not None
        if (distilling or knobs.get("distill_temperature") is not None) and not knobs["teachers"]:
            raise ValueError("--distill-weight and --distill-temperature need a --teacher")
        recipe = recipe_from(CompactRecipe, knobs)
        metrics = train_compact(
            train_dir, output_dir, val_dir=val_dir, recipe=recipe, init_from=init_from
        )
    typer.echo(
        f"Wrote {output_dir / 'bundle'}: validation accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f} (flip-averaged)."
    )


def teach_command(
    data_dir: Annotated[Path, typer.Argument(help="The training faces, one folder per class.")],
    output: Annotated[Path, typer.Argument(help="Answers file to write (.npz).")],
    teacher: Annotated[
        list[str],
        typer.Option(
            help="Teacher bundle (name or folder) or answers file; repeat for an ensemble."
        ),
    ],
    input_size: Annotated[int, typer.Option(help="Side the student will load faces at.")] = 48,
) -> None:
    """Save teachers' mean answers on training faces, for `train --teacher FILE`."""
    from ml.models import FER_LABELS
    from training.data import load_faces
    from training.distill import (
        check_teachers,
        label_agreement,
        save_answers,
        teacher_probabilities,
    )

    _logging()
    with _reported("teach"):
        check_teachers(teacher, FER_LABELS)
        faces = load_faces(data_dir, FER_LABELS, size=input_size)
        answers = teacher_probabilities(teacher, faces.images, FER_LABELS)
        save_answers(output, answers, FER_LABELS, faces.images)
    agreement, on_label = label_agreement(answers, faces.labels)
    typer.echo(
        f"Wrote {output}: {len(answers)} faces, the teachers agree with "
        f"{100 * agreement:.1f}% of the labels ({on_label:.2f} mean probability on the label)."
    )


# --- eval ---------------------------------------------------------------------------------------


def eval_command(
    dataset_dir: Annotated[Path, typer.Argument(help="One folder per class.")],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            envvar="MOODBOT_EVAL_MODELS",
            help="Model name or bundle directory; repeat to compare and ensemble.",
        ),
    ] = None,
    aligned: Annotated[
        bool, typer.Option(help="Images are face crops already: skip detection.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    png: Annotated[Path | None, typer.Option(help="Save the confusion matrices here.")] = None,
    limit_per_class: Annotated[int | None, typer.Option(help="At most N images a class.")] = None,
    tta_flip: Annotated[
        bool, typer.Option(help="Average each face with its mirror image.")
    ] = False,
    batch_size: Annotated[int, typer.Option(help="Faces per model call.")] = 64,
    predictions: Annotated[
        Path | None,
        typer.Option(help="Write one CSV row per image and model (path, truth, predicted)."),
    ] = None,
) -> None:
    """Accuracy over all images, then accuracy, macro-F1, per-class scores, confusion and ms
    per face on the classes each model knows."""
    from ml.models import DEFAULT_MODEL
    from training.evaluate import evaluate

    _logging()
    with _reported("eval"):
        if batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
        report = evaluate(
            dataset_dir,
            model or [DEFAULT_MODEL],
            aligned=aligned,
            limit_per_class=limit_per_class,
            tta_flip=tta_flip,
            batch_size=batch_size,
        )
    _eval_outputs(report, as_json, png, predictions)


def _eval_outputs(report: Any, as_json: bool, png: Path | None, predictions: Path | None) -> None:
    """What was left out on stderr, the files asked for, then the report on stdout."""
    from training import evaluate

    for line in evaluate.describe_problems(report):
        typer.echo(f"moodbot eval: {line}", err=True)
    if png:
        evaluate.save_confusion_png(report.results, png)
    if predictions:
        evaluate.save_predictions_csv(report.results, predictions)
    text = json.dumps(report.to_json(), ensure_ascii=False) if as_json else None
    typer.echo(text or evaluate.format_report(report))


# Commands that write a bundle without training can score it on the spot.
_ScoreOn = Annotated[
    Path | None,
    typer.Option(help="Aligned validation faces: score the bundle into its card and manifest."),
]


def ensemble_command(
    output_dir: Annotated[Path, typer.Argument(help="Folder for the ensemble bundle.")],
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            help="Member: model name or bundle directory, optionally =WEIGHT (default 1; "
            "weights are normalised); two or more.",
        ),
    ],
    name: Annotated[str, typer.Option(help="Model name in the bundle.")] = "moodnet-ensemble",
    val_dir: _ScoreOn = None,
    choose_on: Annotated[
        list[Path] | None,
        typer.Option(
            help="Dataset folder (train/, val/) whose val faces choose the weights (a grid, "
            "cross-fitted); repeat. Compact members only."
        ),
    ] = None,
    step: Annotated[float, typer.Option(help="The weight grid's step, with --choose-on.")] = 0.1,
    group: GroupOption = None,
    floor: FloorOption = None,
    select: SelectOption = "pooled",
) -> None:
    """Average several models' answers, by weight, into one bundle (one model call a batch)."""
    from training.bundle import ModelCard
    from training.ensemble import EnsembleError, write_ensemble

    _logging()
    with _reported("ensemble"):
        members = _weighted(model, "--model")
        card = ModelCard(
            data="the members' training data (see each member's model card)",
            split="members trained and selected on their own splits; no new training",
            settings={"members": dict(members)},
        )
        if choose_on:
            members = _chosen_weights(members, choose_on, step, group, floor, select, card)
        try:
            bundle = write_ensemble(output_dir, name, members, card)
        except EnsembleError as exc:
            raise ValueError(str(exc)) from None
        if val_dir is not None:
            _score_into_card(bundle, val_dir, card)
    typer.echo(f"Wrote {bundle}")
    if choose_on:
        weights = card.metrics["weights"]
        typer.echo(f"Weights {weights}: " + _in_sample_and_cross_fitted(card.metrics, choose_on))


def _chosen_weights(
    members: list[tuple[str, float]],
    data: list[Path],
    step: float,
    group: list[str] | None,
    floor: list[str] | None,
    select: str,
    card: Any,
) -> list[tuple[str, float]]:
    """The members weighted as the vals choose; the choice and its numbers go on the card."""
    from ml.models import resolve_model
    from training.ensemble import ensemble_spec
    from training.weigh import choose_weights

    if any(weight != 1.0 for _, weight in members):
        raise ValueError("--choose-on chooses the weights: give the --model members without them")
    names = [member for member, _ in members]
    ensemble_spec("check", [resolve_model(n)[0] for n in names])  # before any face is read
    weights, card.metrics = choose_weights(
        names,
        data,
        groupings=_pairs(group or [], "--group", str),
        floors=_pairs(floor or [], "--floor", float),
        by=select,
        step=step,
    )
    card.split = "weights chosen on the val faces of " + ", ".join(map(str, data))
    card.settings = {"members": names, "choose_on": [str(d) for d in data], "step": step}
    return list(zip(names, weights, strict=True))


def quantize_command(
    source: Annotated[str, typer.Argument(help="Model name or Keras bundle directory.")],
    output_dir: Annotated[Path, typer.Argument(help="Folder for the quantized bundle.")],
    data: Annotated[
        list[Path] | None,
        typer.Option(help="Dataset folder whose val/ scores both models (aligned); repeat."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Model name in the bundle.")] = None,
) -> None:
    """Store a bundle's weights in 8 bits for the LiteRT interpreter (several times faster)."""
    from training.quantize import quantize

    _logging()
    with _reported("quantize"):
        metrics = quantize(source, output_dir, data or [], name)
    typer.echo(f"Wrote {output_dir}")
    for dataset, pair in metrics.items():
        typer.echo(
            f"{dataset}: {pair['quantized']['accuracy_all']:.4f} quantized, "
            f"{pair['source']['accuracy_all']:.4f} source, over {pair['source']['images']} images"
        )


def views_command(
    source: Annotated[Path, typer.Argument(help="A compact model bundle (from `train`).")],
    output_dir: Annotated[Path, typer.Argument(help="Folder for the new bundle.")],
    zoom_out: Annotated[
        float,
        typer.Option(
            help="Also average the face shrunk by this share of the side (twice the work); "
            "0: flips only."
        ),
    ] = 0.0,
    crop_margin: Annotated[
        float | None,
        typer.Option(help="Box share the bot adds per side around a face; default: the source's."),
    ] = None,
    val_dir: _ScoreOn = None,
) -> None:
    """Re-wrap a trained bundle with other test-time views or framing (no training)."""
    from training.bundle import ModelCard
    from training.views import rewrap_views

    _logging()
    card = ModelCard(
        data="the source bundle's (its card is quoted below)",
        split="no new training: the source's weights with other test-time views",
        settings={"source": str(source), "zoom_out": zoom_out, "crop_margin": crop_margin},
    )
    with _reported("views"):
        bundle = rewrap_views(source, output_dir, zoom_out, card, crop_margin=crop_margin)
        if val_dir is not None:
            _score_into_card(bundle, val_dir, card)
    typer.echo(f"Wrote {bundle}")


def _score_into_card(bundle: Path, val_dir: Path, card: Any) -> None:
    """Evaluate `bundle` on aligned faces and rewrite its card and manifest with the metrics."""
    from ml.models import resolve_model
    from training.bundle import rewrite_card
    from training.evaluate import evaluate

    result = evaluate(val_dir, [bundle], aligned=True).results[0].to_json()
    card.metrics = {key: result[key] for key in ("n", "accuracy", "macro_f1", "per_class")}
    card.metrics["ms_per_face"] = result["ms_per_face"]
    card.split = f"scored on {val_dir} (aligned faces)"
    rewrite_card(bundle, resolve_model(bundle)[0], card)


def split_command(
    root: Annotated[Path, typer.Argument(help="Images in one folder per class.")],
    output_dir: Annotated[Path, typer.Argument(help="Gets train/<class>/ and val/<class>/ links.")],
    by: Annotated[
        str, typer.Option(help="person (AIHub), film (SFEW), or file (a random split).")
    ] = "person",
    val_share: Annotated[float, typer.Option(help="Share of the groups held out.")] = 0.2,
) -> None:
    """Split a dataset into train and val by person or film, never putting one on both sides."""
    from training.sources import split_folder

    _logging()
    with _reported("split"):
        counts = split_folder(root, output_dir, by, val_share)
    for side, c in counts.items():
        typer.echo(f"{side}: {c['images']} images of {c['groups']} groups ({by})")


@with_recipe_options(JointRecipe)
def train_joint_command(
    output_dir: Annotated[Path, typer.Argument(help="Run folder: epochs.jsonl, bundle/.")],
    data: Annotated[
        list[Path],
        typer.Option(help="A dataset folder with train/ and val/ class folders; repeat."),
    ],
    init_from: Annotated[
        Path | None, typer.Option(help="Start from this compact bundle's trunk.")
    ] = None,
    per_epoch: Annotated[
        list[str] | None,
        typer.Option(help="NAME=COUNT: faces drawn from dataset NAME each epoch; repeat."),
    ] = None,
    distill: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=SHARE: that share of dataset NAME's targets is the teacher's answer "
            "(keeps what it knew); repeat."
        ),
    ] = None,
    teacher: Annotated[
        list[str] | None,
        typer.Option(
            help="BUNDLE or BUNDLE=WEIGHT whose answers --distill blends in (default: "
            "--init-from); repeat for an ensemble, answers averaged by weight (default 1)."
        ),
    ] = None,
    floor: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=ACCURACY: prefer epochs whose val accuracy on dataset NAME reaches "
            "it; repeat."
        ),
    ] = None,
    teacher_cache: Annotated[
        Path | None,
        typer.Option(
            help="Keep the teachers' answers on the training faces in this folder; a later "
            "run with the same teacher and faces reads them instead of recomputing."
        ),
    ] = None,
    **knobs: Any,
) -> None:
    """Train one model over datasets with different label sets; select on all their vals.

    Every option after --teacher-cache is a field of training.joint.JointRecipe.
    """
    from training.joint import train_joint

    _logging()
    with _reported("train-joint"):
        recipe = recipe_from(
            JointRecipe,
            knobs,
            per_epoch=_pairs(per_epoch or [], "--per-epoch", int),
            distill=_pairs(distill or [], "--distill", float),
            floor=_pairs(floor or [], "--floor", float),
        )
        metrics = train_joint(
            data,
            output_dir,
            recipe=recipe,
            init_from=init_from,
            teachers=_teachers(teacher),
            teacher_cache=teacher_cache,
        )
    names = [d.name for d in data]
    typer.echo(
        f"Wrote {output_dir / 'bundle'}: "
        + ", ".join(f"{n} {metrics[n]['accuracy']:.4f}" for n in names)
        + f" ({metrics['selected']})."
    )


def _pairs(pairs: list[str], option: str, kind: type[T]) -> dict[str, T]:
    """NAME=VALUE options as a dict, VALUE read as `kind` (int or float)."""
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            if not (name and sep):
                raise ValueError
            values[name] = kind(value)  # type: ignore[call-arg]
        except ValueError:
            shown = "VALUE" if kind is str else kind.__name__.upper()
            raise ValueError(f"{option} takes NAME={shown}, got {pair!r}") from None
    return values


def _teachers(given: list[str] | None) -> list[tuple[Path, float]]:
    """--teacher BUNDLE[=WEIGHT] options as (bundle, weight); a bare BUNDLE weighs 1."""
    return [(Path(b), weight) for b, weight in _weighted(given, "--teacher", "BUNDLE")]


def _weighted(given: list[str] | None, option: str, noun: str = "MODEL") -> list[tuple[str, float]]:
    """MODEL[=WEIGHT] options as (model, weight); a bare MODEL weighs 1."""
    models = []
    for value in given or []:
        model, sep, weight = value.rpartition("=")
        if not sep:
            models.append((value, 1.0))
            continue
        try:
            models.append((model, float(weight)))
        except ValueError:
            raise ValueError(f"{option} takes {noun} or {noun}=WEIGHT, got {value!r}") from None
    return models


def probe_command(
    output: Annotated[Path, typer.Argument(help="JSON file for the results.")],
    data: Annotated[list[Path], typer.Option(help="Dataset folder (train/, val/); repeat.")],
    person_split: Annotated[Path, typer.Option(help="AIHub split by person.")],
    random_split: Annotated[Path, typer.Option(help="The same AIHub faces split at random.")],
    model: Annotated[Path, typer.Option(help="Compact bundle whose features to probe.")] = Path(
        "ml/bundles/moodnet"
    ),
    cache: Annotated[Path, typer.Option(help="Folder for the extracted features.")] = Path(
        "runs/features"
    ),
) -> None:
    """Frozen-feature experiments: label schemes, the seed's recipe, split inflation."""
    from training.probe import run_probes

    _logging()
    with _reported("probe"):
        results = run_probes(model, data, person_split, random_split, cache)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    typer.echo(json.dumps(results, indent=1))


# Options and output that `calibrate` and `interpolate` share: both choose on the vals and
# cross-fit that choice on halves of whole groups.
GroupOption = Annotated[
    list[str] | None,
    typer.Option(
        help="NAME=GROUPING (person, film or file): how dataset NAME's val is halved for "
        "the cross-fitted scores; repeat (default: file, every face its own group)."
    ),
]
FloorOption = Annotated[
    list[str] | None,
    typer.Option(help="NAME=ACCURACY: a choice that keeps dataset NAME there wins; repeat."),
]
SelectOption = Annotated[
    str, typer.Option(help="What the choice raises: pooled (over all images) or mean accuracy.")
]


def _in_sample_and_cross_fitted(metrics: dict, data: list[Path], aside: str = "") -> str:
    names = [d.name for d in data]
    honest = metrics["cross_fitted"]
    return (
        ", ".join(f"{n} {metrics[n]['accuracy']:.4f}" for n in names)
        + f"{aside}; cross-fitted: "
        + ", ".join(f"{n} {honest[n]['accuracy']:.4f}" for n in names)
        + f", pooled {honest['pooled_accuracy']:.4f}."
    )


def calibrate_command(
    bundle: Annotated[Path, typer.Argument(help="A bundle written by train-joint.")],
    output_dir: Annotated[Path, typer.Argument(help="Folder for the shifted model's bundle.")],
    data: Annotated[list[Path], typer.Option(help="Dataset folder (train/, val/); repeat.")],
    group: GroupOption = None,
    floor: FloorOption = None,
    select: SelectOption = "pooled",
) -> None:
    """Search per-label prior offsets on every dataset's val faces and fold them into the model.

    Also scores each val half with offsets searched on the other half (cross-fitted)."""
    from training.calibrate import calibrate

    _logging()
    with _reported("calibrate"):
        metrics = calibrate(
            bundle,
            data,
            output_dir,
            groupings=_pairs(group or [], "--group", str),
            floors=_pairs(floor or [], "--floor", float),
            by=select,
        )
    before = metrics["accuracy_before_offsets"]
    typer.echo(
        f"Wrote {output_dir}: {_in_sample_and_cross_fitted(metrics, data, f' (before: {before})')}"
    )


def interpolate_command(
    base: Annotated[Path, typer.Argument(help="The bundle the fine-tuned model started from.")],
    tuned: Annotated[Path, typer.Argument(help="A bundle written by train-joint.")],
    output_dir: Annotated[Path, typer.Argument(help="Folder for the mixed model's bundle.")],
    data: Annotated[list[Path], typer.Option(help="Dataset folder (train/, val/); repeat.")],
    share: Annotated[
        list[str] | None,
        typer.Option(
            help="A share of the fine-tuned model's weights to try: one number for every "
            "layer, or one per block, comma-separated (stem, stage1, stage2, stage3, emotion "
            "for the compact network); repeat (default: 0 to 1 in steps of 0.05)."
        ),
    ] = None,
    group: GroupOption = None,
    floor: FloorOption = None,
    select: SelectOption = "pooled",
    name: Annotated[str, typer.Option(help="Model name in the bundle.")] = "moodnet-blend",
) -> None:
    """Mix a fine-tuned model's weights with its base's (WiSE-FT) at the share the vals choose.

    Also scores each val half with the share chosen on the other half (cross-fitted)."""
    from training.interpolate import SHARES, interpolate

    _logging()
    with _reported("interpolate"):
        metrics = interpolate(
            base,
            tuned,
            data,
            output_dir,
            shares=_shares(share) or SHARES,
            groupings=_pairs(group or [], "--group", str),
            floors=_pairs(floor or [], "--floor", float),
            by=select,
            name=name,
        )
    typer.echo(
        f"Wrote {output_dir} (share {metrics['share']}): "
        + _in_sample_and_cross_fitted(metrics, data)
    )


def _shares(given: list[str] | None) -> list[tuple[float, ...]]:
    """--share options as tuples: "0.6" -> (0.6,), "0.4,0.7,0.8" -> one share per block."""
    shares = []
    for option in given or []:
        try:
            shares.append(tuple(float(part) for part in option.split(",")))
        except ValueError:
            raise ValueError(
                f"--share takes a number or comma-separated numbers, got {option!r}"
            ) from None
    return shares


COMMANDS: dict[str, Callable[..., None]] = {
    "preprocess": preprocess_command,
    "train": train_command,
    "teach": teach_command,
    "download-weights": download_weights_command,
    "train-vggface": train_vggface_command,
    "eval": eval_command,
    "ensemble": ensemble_command,
    "quantize": quantize_command,
    "views": views_command,
    "split": split_command,
    "train-joint": train_joint_command,
    "probe": probe_command,
    "calibrate": calibrate_command,
    "interpolate": interpolate_command,
}
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)


def main() -> None:
    """The `moodbot-train` script (also `python -m training.cli`): the commands on their own."""
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        import_tensorflow_quietly()
    app()


if __name__ == "__main__":
    main()
