"""Command-line options made from a recipe dataclass: a new training knob is one field.

A recipe field declared with `knob(default, help)` becomes an option of the command that
`with_recipe_options(Recipe)` decorates (`--field-name`, or the name it is given); the command
receives the given values as keyword arguments and builds the recipe with `recipe_from`.
Options that are not given stay None, so the recipe's own default applies.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def knob(default: Any, help: str, *, option: str | None = None, envvar: str | None = None) -> Any:
    """A recipe field that is also a command-line option (default name: `--field-name`)."""
    return dataclasses.field(
        default=default, metadata={"help": help, "option": option, "envvar": envvar}
    )


def with_recipe_options(recipe: type) -> Callable[[F], F]:
    """Add an option for every `knob` of `recipe` to a command that takes `**knobs`."""

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)  # Annotated objects, not strings
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        added = list(_options(recipe))
        command.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        command.__annotations__ = {
            **typing.get_type_hints(command, include_extras=True),
            **{p.name: p.annotation for p in added},
        }
        return command

    return decorate


def recipe_from(recipe: type[R], knobs: dict[str, Any], **fixed: Any) -> R:
    """The recipe from the options that were given (None: not given) and `fixed` values."""
    hints = typing.get_type_hints(recipe)
    given = {name: value for name, value in knobs.items() if value is not None}
    for name, value in given.items():
        if typing.get_origin(hints[name]) is tuple:  # a repeated option arrives as a list
            given[name] = tuple(value)
    return recipe(**given, **fixed)


def _options(recipe: type) -> list[inspect.Parameter]:
    hints = typing.get_type_hints(recipe)
    options = []
    for field in dataclasses.fields(recipe):
        if "help" not in field.metadata:
            continue
        option = field.metadata["option"] or "--" + field.name.replace("_", "-")
        help_text = field.metadata["help"]
        if "(default" not in help_text:  # a help that names its default says it better
            shown = "none" if field.default is None or field.default == () else field.default
            help_text += f" (default: {shown})"
        info = typer.Option(
            option,
            help=help_text,
            envvar=field.metadata["envvar"],
            show_default=False,
        )
        annotation = Annotated[_cli_type(hints[field.name]) | None, info]
        options.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                                         default=None, annotation=annotation))  # fmt: skip
    return options


def _cli_type(hint: Any) -> Any:
    """What Typer can parse for a field's type: tuples become repeatable lists, X | None -> X."""
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]  # type: ignore[misc]
    if isinstance(hint, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint
