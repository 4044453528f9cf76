"""What /healthz reports: the model, the database, the chat transports, and admission."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
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


async def check_health(
    service: MoodService, states: TransportStates | None = None, *, exclude: str | None = None
) -> Health:
    """Check every part; the probe of the database the history really uses is bounded."""
    try:
        async with asyncio.timeout(DB_PROBE_TIMEOUT_S * 2 + 1):
            db_error = await service.history.probe()
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
