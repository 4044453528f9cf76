"""Training options made from the recipe dataclass (training/options.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.testing import CliRunner

from training.options import knob, recipe_from, with_recipe_options
from training.train import CompactRecipe


@dataclass(frozen=True)
class Recipe:
    epochs: int = knob(3, "Epochs.")
    rate: float | None = knob(None, "Learning rate.", option="--lr")
    teachers: tuple[str, ...] = knob((), "A teacher; repeat.", option="--teacher")
    hidden: int = 7  # no knob: not an option


def test_a_knob_is_an_option_and_only_given_options_override_the_recipe() -> None:
    seen: list[Recipe] = []
    app = typer.Typer()

    @app.command()
    @with_recipe_options(Recipe)
    def run(
        name: Annotated[str, typer.Argument()],
        loud: Annotated[bool, typer.Option("--shout", help="The command's own option.")] = False,
        **knobs: Any,
    ) -> None:
        seen.append(recipe_from(Recipe, knobs))

    runner = CliRunner()
    assert (
        runner.invoke(app, ["x", "--lr", "0.5", "--teacher", "a", "--teacher", "b"]).exit_code == 0
    )
    assert runner.invoke(app, ["x"]).exit_code == 0
    assert seen == [Recipe(rate=0.5, teachers=("a", "b")), Recipe()]
    helped = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "Epochs. (default: 3)" in helped and "--lr" in helped and "--hidden" not in helped
    assert "--shout" in helped and "The command's own option." in helped  # kept as declared
    assert runner.invoke(app, ["x", "--hidden", "1"]).exit_code == 2


def test_moodbot_train_offers_every_knob_of_the_compact_recipe() -> None:
    from training.cli import app

    helped = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--epochs", "--mixup", "--teacher", "--time-limit", "--seed", "--name"):
        assert f"{option} " in helped
    assert "--dropout" not in helped  # a field without knob() stays out of the command line
    assert "Continue from this bundle's weights." in helped
    vggface = CliRunner().invoke(app, ["train-vggface", "--help"], env={"COLUMNS": "200"}).output
    assert "MOODBOT_VGGFACE_WEIGHTS" in vggface and "vgg16|resnet50|senet50" in vggface
    preprocess = CliRunner().invoke(app, ["preprocess", "--help"], env={"COLUMNS": "200"}).output
    assert "--json " in preprocess and "--format " in preprocess and "png|jpg" in preprocess
    assert CompactRecipe().epochs == 60
