"""A missing or damaged model bundle stops `moodbot` at start-up with one clear line.

MOODBOT_MODEL points at a copy of the shipped bundle that lost its weights, has them cut
short, or has a broken manifest. Each fault is checked in-process (cheap), and the installed
console script runs as a user would run it for `analyze` and for `run` with the Telegram bot
(each start imports TensorFlow, so two of them). tests/test_models.py covers tiny synthetic
bundles and tests/test_cli.py an unknown model directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ml.errors import ModelLoadError
from ml.loader import load_emotion_model
from ml.models import BUNDLE_FILE, resolve_model
from tests.fakes.telegram import TOKEN

pytestmark = pytest.mark.slow

MOODBOT = str(Path(sys.executable).with_name("moodbot"))
EXIT_FAILED = 1


def broken_bundle(folder: Path, fault: str) -> tuple[Path, Path]:
    """A copy of the shipped bundle with one fault; returns it and the file that is at fault."""
    spec, weights = resolve_model("moodnet")
    bundle = folder / "bundle"
    bundle.mkdir()
    shutil.copy(weights.parent / BUNDLE_FILE, bundle / BUNDLE_FILE)
    model = bundle / spec.model_file
    if fault == "missing-weights":
        return bundle, model
    if fault == "truncated-weights":
        # A download or copy cut short: the first half of the real file.
        data = weights.read_bytes()
        model.write_bytes(data[: len(data) // 2])
        return bundle, model
    assert fault == "corrupt-manifest"
    shutil.copy(weights, model)
    (bundle / BUNDLE_FILE).write_text('{"name": "moodnet", "labels": [')
    return bundle, bundle / BUNDLE_FILE


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moodbot(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MOODBOT_", "SPOTIFY_", "TELEGRAM_", "DISCORD_"))
    }
    environment.update({"MOODBOT_DB": str(cwd / "moods.db"), **env})
    return subprocess.run(
        [MOODBOT, *args],
        input="",
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=240,
    )


FAULTS = ("missing-weights", "truncated-weights", "corrupt-manifest")


@pytest.mark.parametrize("fault", FAULTS)
def test_each_broken_bundle_names_its_file(tmp_path: Path, fault: str) -> None:
    bundle, culprit = broken_bundle(tmp_path, fault)
    with pytest.raises(ModelLoadError) as caught:
        load_emotion_model(bundle)
    assert str(culprit) in str(caught.value)


@pytest.mark.parametrize(
    ("fault", "command", "env"),
    [
        ("truncated-weights", ["analyze", "photo.jpg"], {}),
        (
            "corrupt-manifest",
            ["run"],  # the Telegram bot: the model is checked before Telegram is called
            {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_BASE_URL": "http://127.0.0.1:{port}/bot"},
        ),
    ],
)
def test_broken_model_is_one_clear_startup_error(
    tmp_path: Path, astronaut_jpeg: bytes, fault: str, command: list[str], env: dict[str, str]
) -> None:
    bundle, culprit = broken_bundle(tmp_path, fault)
    (tmp_path / "photo.jpg").write_bytes(astronaut_jpeg)
    env = {k: v.format(port=closed_port()) for k, v in env.items()}

    result = moodbot(command, tmp_path, MOODBOT_MODEL=str(bundle), **env)

    assert result.returncode == EXIT_FAILED
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("moodbot: ") and str(culprit) in last
    assert result.stdout == ""  # nothing was analysed or answered
