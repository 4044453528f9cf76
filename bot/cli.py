"""The `moodbot` command line: run the chat, analyse photos, and the tools later issues add."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# TensorFlow prints start-up noise to stderr before logging is configured; keep it quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bot.bench import bench_command
from bot.catalogue import CatalogueError
from bot.picker import UnknownGenre
from bot.settings import Settings, SettingsError, load_settings
from ml.errors import ModelLoadError
from ml.quiet import import_tensorflow_quietly

if TYPE_CHECKING:
    from bot.music import MusicRecommender

app = typer.Typer(
    name="moodbot",
    help="A selfie-to-music bot: reads the mood on a face and answers with music.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("moodbot")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NO_FACE = 0, 1, 2, 3
# What stops start-up with one line and exit status 1: a model, catalogue or genre unusable.
START_UP_ERRORS = (ModelLoadError, CatalogueError, UnknownGenre)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        typer.echo(f"moodbot: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return settings


def _start_up_message(exc: Exception) -> str:
    if isinstance(exc, UnknownGenre):
        return f"MOODBOT_GENRE: {exc}"
    return str(exc)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"moodbot: {message}", err=True)
    return typer.Exit(EXIT_FAILED)


ModelOption = Annotated[
    str | None,
    typer.Option("--model", envvar="MOODBOT_MODEL", help="Model name or bundle directory."),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", envvar="MOODBOT_DB", help="The history: a SQLite file or a postgresql:// URL."
    ),
]


WebOption = Annotated[
    bool,
    typer.Option(
        "--web", help="Also serve the web demo, /healthz and /metrics (MOODBOT_WEB=true)."
    ),
]
HostOption = Annotated[
    str | None,
    typer.Option("--host", envvar="MOODBOT_WEB_HOST", help="Address the web server listens on."),
]
PortOption = Annotated[
    int | None,
    typer.Option("--port", envvar="MOODBOT_WEB_PORT", help="Port of the web server."),
]


@app.command()
def run(model: ModelOption = None, db: DbOption = None, web: WebOption = False) -> None:
    """Start moodbot: Telegram and/or Discord when their tokens are set, else the console chat.

    With --web the web server runs in the same process; with --web and no bot token, only
    the web server runs (no console chat: it would end at once under a service manager).
    """
    settings = _settings(MOODBOT_MODEL=model, MOODBOT_DB=db, MOODBOT_WEB=web or None)
    bots = settings.telegram_bot_token or settings.discord_bot_token
    if settings.web_enabled and not bots:
        log.info("No bot token set: serving the web demo only")
    try:
        if bots or settings.web_enabled:
            asyncio.run(_bots(settings, web=settings.web_enabled))
        else:
            asyncio.run(_console(settings))
    except START_UP_ERRORS as exc:
        raise _fail(_start_up_message(exc)) from None
    except KeyboardInterrupt:
        typer.echo("", err=True)


@app.command("web")
def web_command(
    model: ModelOption = None,
    db: DbOption = None,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Serve the web demo page, /api/analyze, /healthz and /metrics (no chat bots)."""
    settings = _settings(
        MOODBOT_MODEL=model, MOODBOT_DB=db, MOODBOT_WEB_HOST=host, MOODBOT_WEB_PORT=port
    )
    try:
        asyncio.run(_bots(settings, web=True, bots=False))
    except START_UP_ERRORS as exc:
        raise _fail(_start_up_message(exc)) from None
    except KeyboardInterrupt:
        typer.echo("", err=True)


async def _bots(settings: Settings, *, web: bool = False, bots: bool = True) -> None:
    from bot.runner import StartupError, TransportStopped, serve

    try:
        await serve(settings, web=web, bots=bots)
    except (StartupError, TransportStopped) as exc:
        raise _fail(str(exc)) from None


async def _console(settings: Settings) -> None:
    from bot.app import open_service
    from bot.console import ConsoleChat, console_sender

    async with open_service(settings) as service:
        console = ConsoleChat(
            service,
            sender=console_sender(),
            max_bytes=settings.max_image_bytes,
            out=sys.stdout,
        )
        await console.run(sys.stdin, interactive=sys.stdin.isatty())


@app.command()
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="Photos to analyse.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    model: ModelOption = None,
) -> None:
    """Analyse photos: the emotion on each face and music for the main one.

    Exit status: 0 when every photo had a face, 3 when some had none, 2 when any could
    not be read.
    """
    from bot.analyze import analyze_paths, exit_status, human_line

    settings = _settings(MOODBOT_MODEL=model)
    try:
        results = asyncio.run(analyze_paths(settings, paths, emit=_printer(as_json, human_line)))
    except START_UP_ERRORS as exc:
        raise _fail(_start_up_message(exc)) from None
    raise typer.Exit(exit_status(results))


@app.command()
def music(
    mood: Annotated[str, typer.Argument(help="An emotion: happy, sad, 슬픔, anger, ...")],
    mode: Annotated[
        str, typer.Option("--mode", help="match, lift or calm: how the music relates to it.")
    ] = "match",
    genre: Annotated[
        str | None, typer.Option("--genre", help="Only this genre (k-pop, kpop, 케이팝, jazz...).")
    ] = None,
    count: Annotated[int | None, typer.Option("--count", help="How many tracks (1-10).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of the tracks.")] = False,
) -> None:
    """Music for a mood without a photo: catalogue tracks, offline.

    Exit status 2 for an unknown mood, mode or genre (one line on stderr).
    """
    from bot.music import UnknownEmotion, track_recommendation

    settings = _settings()
    try:
        music = _catalogue_music(settings)
        picked = music.pick(mood, mode=mode, genre=genre, count=count)
    except (UnknownEmotion, UnknownGenre, ValueError) as exc:
        typer.echo(f"moodbot: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    links = [track_recommendation(t, picked.genre) for t in picked.tracks]
    if as_json:
        typer.echo(json.dumps([link.as_json() for link in links], ensure_ascii=False))
        return
    for link in links:
        typer.echo(f"{link.label}  {link.url}  (valence {link.valence}, energy {link.energy})")


def _catalogue_music(settings: Settings) -> MusicRecommender:
    """The catalogue's music alone: no Spotify, nothing but the picker to load."""
    from bot.music import MusicRecommender, shipped_catalogue

    try:
        catalogue = shipped_catalogue(settings.catalogue_path)
    except CatalogueError as exc:
        raise _fail(str(exc)) from None
    count, explicit = settings.music_count, settings.allow_explicit
    return MusicRecommender(None, catalogue=catalogue, count=count, allow_explicit=explicit)


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Model name or bundle directory to export.")],
    out_dir: Annotated[Path, typer.Argument(help="Directory to write (TF Serving base path).")],
    version: Annotated[
        int, typer.Option("--version", min=1, help="Version sub-directory (TF Serving).")
    ] = 1,
    serving_url: Annotated[
        str | None,
        typer.Option(
            "--serving-url",
            help="TF Serving model URL (http://HOST:8501/v1/models/NAME) to call instead of "
            "running the SavedModel in-process.",
        ),
    ] = None,
) -> None:
    """Write the emotion classifier as a TensorFlow SavedModel (OUT_DIR/VERSION) + bundle.json."""
    from ml.errors import ModelLoadError
    from ml.serving import export_saved_model

    _settings()
    try:
        target = export_saved_model(model, out_dir, version=version, serving_url=serving_url)
    except (ModelLoadError, OSError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"SavedModel written to {target}")


@app.command()
def stats(
    days: Annotated[
        int | None,
        typer.Option("--days", min=0, help="Only analyses of the last N days (0: all time)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    db: DbOption = None,
) -> None:
    """Analyses, "Not quite?" corrections and the predicted-vs-corrected matrix, from the DB."""
    from bot.history import HistoryUnavailable, is_postgres_url, open_history
    from bot.stats import since_days, stats_json, stats_text

    settings = _settings(MOODBOT_DB=db)
    if not is_postgres_url(settings.database) and not Path(settings.database).exists():
        raise _fail(f"no history database at {settings.database}")

    async def read_stats() -> Any:
        history = await open_history(settings.database)
        try:
            return await history.correction_stats(since_days(days, datetime.now(UTC)))
        finally:
            await history.aclose()

    try:
        result = asyncio.run(read_stats())
    except HistoryUnavailable as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(stats_json(result, days), ensure_ascii=False))
    else:
        typer.echo(stats_text(result, days))


db_app = typer.Typer(help="The mood history database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("copy")
def db_copy(
    sqlite_file: Annotated[Path, typer.Argument(help="The SQLite history to copy from.")],
    postgres_url: Annotated[str, typer.Argument(help="postgresql://user:password@host/db")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Copy a SQLite history into PostgreSQL; running it again copies nothing twice."""
    from bot.history import HistoryUnavailable, is_postgres_url
    from bot.history_pg import CopyConflict, copy_from_sqlite, redacted_url

    _settings()  # logging as configured
    if not sqlite_file.is_file():
        raise _fail(f"no SQLite history at {sqlite_file}")
    if not is_postgres_url(postgres_url):
        raise _fail("the target must be a postgresql:// URL")
    try:
        report = asyncio.run(copy_from_sqlite(sqlite_file, postgres_url))
    except (HistoryUnavailable, CopyConflict) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.to_json()))
        return
    typer.echo(
        f"Copied {report.moods_copied} moods ({report.moods_present} already there),"
        f" {report.preferences_copied} preferences ({report.preferences_present} already"
        f" there) and {report.tracks_copied} recommended tracks ({report.tracks_present}"
        f" already there) from {sqlite_file} to {redacted_url(postgres_url)}"
    )


def _printer(as_json: bool, human: Any) -> Any:
    def emit(result: dict[str, Any]) -> None:
        line = json.dumps(result, ensure_ascii=False) if as_json else human(result)
        typer.echo(line)

    return emit


# Commands that other installed packages add (`moodbot.commands` entry points, each a Typer
# app): the training pipeline (training/pyproject.toml) adds preprocess, train, eval and the
# rest. bot/ never imports them; a production install simply has none.
PLUGIN_GROUP = "moodbot.commands"


def _mount_plugins() -> set[str]:
    """Add every installed plugin's commands to `app`; returns their names."""
    names: set[str] = set()
    for entry_point in entry_points(group=PLUGIN_GROUP):
        plugin: typer.Typer = entry_point.load()
        app.add_typer(plugin)
        names |= {command.name or "" for command in plugin.registered_commands}
    return names


app.command("bench")(bench_command)
PLUGIN_COMMANDS = _mount_plugins()
# Commands of the training package, named here only to say how to get them when it is missing.
TRAINING_COMMANDS = ("preprocess", "train", "teach", "download-weights", "train-vggface", "eval")
TENSORFLOW_COMMANDS = {"run", "web", "export", "analyze", "bench"}


def main() -> None:
    """Console-script entry point."""
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command in TRAINING_COMMANDS and command not in PLUGIN_COMMANDS:
        typer.echo(
            f"moodbot: `{command}` belongs to the training pipeline, which this install leaves "
            "out; install it with `uv sync` (development install) or `pip install "
            "moodbot-training`.",
            err=True,
        )
        raise SystemExit(EXIT_BAD_INPUT)
    stub = command == "run" and os.environ.get("MOODBOT_ENGINE") == "stub"  # no TensorFlow
    if command in TENSORFLOW_COMMANDS | PLUGIN_COMMANDS and not stub:
        import_tensorflow_quietly()
    app()


if __name__ == "__main__":
    main()
