"""What /healthz reports: the model, the database, the chat transports, and admission."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core import MoodService
from bot.transports import TransportStates

DB_PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Health:
    """One health check's findings; `ok` only when every part is fine."""

    model_loaded: bool
    model_name: str
    database_writable: bool
    database_error: str | None
    accepting: bool
    transports: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            self.model_loaded
            and self.database_writable
            and self.accepting
            and all(self.transports.values())
        )

    def to_json(self) -> dict[str, Any]:
        database: dict[str, Any] = {"writable": self.database_writable}
        if self.database_error:
            database["error"] = self.database_error
        return {
            "ok": self.ok,
            "model": {"loaded": self.model_loaded, "name": self.model_name},
            "database": database,
            "accepting": self.accepting,
            "transports": self.transports,
        }


def probe_database(path: Path, timeout: float = DB_PROBE_TIMEOUT_S) -> str | None:
    """None when a write transaction can start on the file now, else why not.

    A separate short-lived connection takes the write lock and gives it straight back:
    nothing is written, and a database locked by a stuck writer counts as not writable.
    """
    try:
        # mode=rw: never create a missing database file while checking it.
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout, isolation_level=None
        )
    except sqlite3.Error as exc:
        return str(exc)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        connection.close()
    return None


async def check_health(
    service: MoodService, states: TransportStates | None = None, *, exclude: str | None = None
) -> Health:
    """Check every part; the database probe runs in a thread, bounded by its timeout."""
    try:
        async with asyncio.timeout(DB_PROBE_TIMEOUT_S * 2 + 1):
            db_error = await asyncio.to_thread(probe_database, Path(service.history.path))
    except TimeoutError:
        db_error = "the database check timed out"
    transports = states.snapshot() if states else {}
    transports.pop(exclude or "", None)
    return Health(
        model_loaded=service.engine.running,
        model_name=service.engine.model.spec.name,
        database_writable=db_error is None,
        database_error=db_error,
        accepting=service.accepting,
        transports=transports,
    )
