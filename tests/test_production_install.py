"""A production install (`uv sync --no-dev --no-editable`) runs the product without training/.

The install is a fresh virtual environment built from uv.lock and the warm uv cache (a few
seconds: uv links the cached packages); the commands run in a folder outside the repository,
so nothing but the installed wheel of bot/ and ml/ can be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.processes import healthz_status, terminate

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
UV = shutil.which("uv")


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh production install."""
    if UV is None:
        pytest.skip("uv is not installed")
    venv = tmp_path_factory.mktemp("production") / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_NO_SYNC")}
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    # --reinstall-package: build moodbot's wheel from this tree, not a cached older build.
    command = [UV, "sync", "--frozen", "--no-dev", "--no-editable", "--quiet"]
    command += ["--reinstall-package", "moodbot"]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


def run(bin_dir: Path, *args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        cwd=cwd,
        env=_env(cwd),
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def _env(cwd: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MOODBOT_", "SPOTIFY_"))}
    keep = {k: v for k, v in keep.items() if not k.endswith("_BOT_TOKEN") and k != "PYTHONPATH"}
    # Let the new environment keep its compiled bytecode: TensorFlow then imports in seconds.
    keep.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**keep, "MOODBOT_DB": str(cwd / "moods.db")}


def test_training_and_dev_tools_are_not_installed(production: Path, tmp_path: Path) -> None:
    for module in ("training", "skimage", "pytest"):
        found = run(production, "python", "-c", f"import {module}", cwd=tmp_path)
        assert found.returncode == 1 and "ModuleNotFoundError" in found.stderr
    assert not (production / "moodbot-train").exists()
    refused = run(production, "moodbot", "train", "data", "out", cwd=tmp_path)
    assert refused.returncode == 2
    assert "`train` belongs to the training pipeline" in refused.stderr
    helped = run(production, "moodbot", "--help", cwd=tmp_path)
    for command in ("run", "web", "analyze", "music", "bench", "export", "stats"):
        assert f"│ {command} " in helped.stdout
    assert "│ train " not in helped.stdout


def test_analyze_and_the_console_chat(
    production: Path, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    (tmp_path / "me.jpg").write_bytes(astronaut_jpeg)
    analyzed = run(production, "moodbot", "analyze", "--json", "me.jpg", cwd=tmp_path)
    assert analyzed.returncode == 0, analyzed.stderr
    result = json.loads(analyzed.stdout)
    assert result["faces"][0]["emotion"] == "happy"
    # The music catalogue ships inside the wheel.
    assert [r["kind"] for r in result["recommendations"]] == ["track"] * 5
    chat = run(production, "moodbot", "run", cwd=tmp_path, input="me.jpg\n/quit\n")
    assert chat.returncode == 0, chat.stderr
    assert "You look happy" in chat.stdout


def test_web_serves_and_stops(production: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(production / "moodbot"), "web", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=_env(tmp_path), stderr=subprocess.PIPE, text=True
    )
    try:
        health = healthz_status(process, port, 300)
    finally:
        stderr = terminate(process)
    assert health == 200, stderr
    assert process.returncode == 0 and "Traceback" not in stderr


def test_bench_smoke_run(production: Path, tmp_path: Path) -> None:
    bench = run(production, "moodbot", "bench", "--smoke", "--json", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout)
    assert result["latency_ms"]["640x480"]["n"] > 0
    assert result["baseline_latency_ms"]["640x480"]["n"] > 0
    assert result["rss_mb"] > 0 and result["baseline_rss_mb"] > 0
    assert result["music"]["catalogue_tracks"] > 85_000
