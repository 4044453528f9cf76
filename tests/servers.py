"""Private PostgreSQL and Redis servers for the tests: free ports, temporary folders, stopped after.

`scripts/install-servers.sh` (run by `make test`) installs Debian's packages. A missing server
skips its tests, unless MOODBOT_REQUIRE_SERVERS=1 (CI) makes it a failure.
MOODBOT_TEST_POSTGRES_URL / MOODBOT_TEST_REDIS_URL point the tests at servers you run instead:
the PostgreSQL role must be allowed to CREATE DATABASE (each test gets its own), and the Redis
database is flushed before every test that uses it. Tests that stop or kill a server need the
private ones and skip with an external URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT_S = 30.0


def missing_server(what: str) -> None:
    """Skip the test, or fail it when MOODBOT_REQUIRE_SERVERS=1 (CI)."""
    if os.environ.get("MOODBOT_REQUIRE_SERVERS") == "1":
        pytest.fail(f"MOODBOT_REQUIRE_SERVERS=1 but {what} (run scripts/install-servers.sh)")
    pytest.skip(f"{what} (scripts/install-servers.sh installs it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(command: list[str], cwd: Path) -> None:
    """Run a server command; its own error output on failure, not just an exit status."""
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=START_TIMEOUT_S * 4
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr or done.stdout}")


def _wait_for(check, what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


# --- PostgreSQL ----------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """Debian keeps initdb and pg_ctl off PATH, under /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb") and shutil.which("pg_isready"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return versions[-1] if versions and (versions[-1] / "pg_ctl").exists() else None


@dataclass
class PostgresServer:
    """One PostgreSQL cluster: a private one (stop/start work) or an external URL."""

    url: str  # an admin connection: CREATE DATABASE and pg_terminate_backend
    bin: Path | None = None
    data: Path | None = None
    port: int = 0
    _as_user: list[str] = field(default_factory=list)

    @property
    def private(self) -> bool:
        return self.data is not None

    def database_url(self, name: str) -> str:
        base, _, _ = self.url.rpartition("/")
        return f"{base}/{name}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rpartition("/")[2]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _pg_ctl(self, *args: str) -> None:
        assert self.bin and self.data
        # cwd: a folder the postgres user may enter.
        _run([*self._as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args],
             cwd=self.data.parent)  # fmt: skip

    def start(self) -> None:
        """Start the private server and wait until it accepts connections."""
        assert self.bin and self.data
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
            # Throwaway data: durability buys nothing here and costs seconds.
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        wait = ["-w", "-t", str(int(START_TIMEOUT_S))]
        self._pg_ctl(*wait, "-l", str(self.data / "log"), "-o", options, "start")
        ready = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        _wait_for(lambda: subprocess.run(ready).returncode == 0, "PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        """Stop the private server (`immediate` is a crash: no checkpoint)."""
        self._pg_ctl("-w", "-m", mode, "stop")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """MOODBOT_TEST_POSTGRES_URL, or a private cluster in a temporary folder."""
    external = os.environ.get("MOODBOT_TEST_POSTGRES_URL")
    if external:
        yield PostgresServer(url=external)
        return
    bin_dir = postgres_bin()
    if bin_dir is None:
        missing_server("PostgreSQL (initdb, pg_ctl) is not installed")
    assert bin_dir is not None
    # PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user.
    as_user: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
        if runuser is None:
            missing_server("running as root without runuser to start PostgreSQL as postgres")
        as_user = [str(runuser), "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="moodbot-pg-"))
    data = root / "data"
    if as_user:
        shutil.chown(root, user="postgres")
    root.chmod(0o700)
    server = PostgresServer(url="", bin=bin_dir, data=data, port=free_port(), _as_user=as_user)
    server.url = f"postgresql://moodbot@127.0.0.1:{server.port}/postgres"
    try:
        _run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "moodbot",
             "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"], cwd=root)  # fmt: skip
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# --- Redis ---------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """One Redis server: a private one (kill/start work) or an external URL."""

    url: str
    port: int = 0
    folder: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def private(self) -> bool:
        return self.folder is not None

    def start(self) -> None:
        assert self.folder is not None
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder),
             "--logfile", str(self.folder / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for(self.ping, "Redis")

    def ping(self) -> bool:
        import redis

        try:
            with redis.Redis.from_url(self.url, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def flush(self) -> None:
        import redis

        with redis.Redis.from_url(self.url, socket_timeout=2) as client:
            client.flushdb()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """MOODBOT_TEST_REDIS_URL, or a private server (root is fine: --port, no persistence)."""
    external = os.environ.get("MOODBOT_TEST_REDIS_URL")
    if external:
        yield RedisServer(url=external)
        return
    if shutil.which("redis-server") is None:
        missing_server("redis-server is not installed")
    folder = Path(tempfile.mkdtemp(prefix="moodbot-redis-"))
    port = free_port()
    server = RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, folder=folder)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(folder, ignore_errors=True)
