"""The web front door: a demo page, /api/analyze, /healthz and /metrics (aiohttp)."""

from bot.web.metrics import Metrics
from bot.web.server import WebServer, create_app

__all__ = ["Metrics", "WebServer", "create_app"]
