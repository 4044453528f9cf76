"""Helpers for tests that run moodbot's web server as a process of its own."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time

import requests


def healthz_status(process: subprocess.Popen, port: int, seconds: float) -> int | None:
    """/healthz's status once it is 200, else the last one seen (None: it never answered)."""
    status = None
    deadline = time.monotonic() + seconds
    while status != 200 and time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(requests.ConnectionError):  # not listening yet
            status = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
        if status != 200:
            time.sleep(0.5)
    return status


def terminate(process: subprocess.Popen) -> str:
    """Stop it with SIGTERM, as a service manager does; its stderr (killed if it hangs)."""
    try:
        process.send_signal(signal.SIGTERM)
        return process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
