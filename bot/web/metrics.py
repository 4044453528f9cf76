"""Prometheus metrics for every photo any transport sends, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.core import REFUSALS, MoodService, Reply, Sender
from bot.music import FALLBACK_REASONS

CONTENT_TYPE = CONTENT_TYPE_LATEST

# From a phone upload to a busy CPU: 50 ms .. 30 s.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)


def fallback_label(reason: str | None) -> str:
    """A bounded label value for a music fallback reason ("refused (403)" -> "refused")."""
    base = (reason or "unknown").split("(")[0].strip()
    return base.replace(" ", "_") if base in FALLBACK_REASONS else "other"


class Metrics:
    """Counts photos, faces, failures and Spotify fallbacks; the core reports to it.

    It is the core's `PhotoObserver`: set `service.observer = metrics` and every transport's
    photos are counted in one place. A registry of its own keeps several instances (tests,
    or several services in one process) apart.
    """

    def __init__(self, service: MoodService) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.photos = Counter(
            "moodbot_photos_analysed",
            "Photos handled by the core, by platform and use (selfie or group_photo).",
            ["platform", "use"],
            registry=self.registry,
        )
        self.faces = Counter(
            "moodbot_faces_found",
            "Faces found in analysed photos.",
            ["platform"],
            registry=self.registry,
        )
        self.errors = Counter(
            "moodbot_photo_errors",
            "Photos that got no music, by error code (no_face, unreadable, too_large, busy, ...).",
            ["kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "moodbot_analysis_seconds",
            "Time from a photo reaching the core to its reply (fetch, engine, music, history).",
            ["use"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "moodbot_spotify_fallbacks",
            "Replies without a Spotify playlist (the catalogue tracks only), by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.corrections = Counter(
            "moodbot_corrections",
            'Moods people corrected with "Not quite?", by what the model read and what they '
            "chose: where the model is wrong in the real world.",
            ["predicted", "corrected"],
            registry=self.registry,
        )
        queue_depth = Gauge(
            "moodbot_engine_queue_depth",
            "Photos waiting for the emotion engine.",
            registry=self.registry,
        )
        queue_depth.set_function(lambda: service.engine.queue_depth)
        in_flight = Gauge(
            "moodbot_requests_in_flight",
            "Core requests being worked on now.",
            registry=self.registry,
        )
        in_flight.set_function(lambda: service.in_flight.count)

    def photo_done(self, who: Sender, use: str, reply: Reply, seconds: float) -> None:
        """Count one photo's outcome (the core calls this for every transport)."""
        self.photos.labels(platform=who.platform, use=use).inc()
        if reply.error_code is not None:
            self.errors.labels(kind=reply.error_code).inc()
        if reply.error_code not in REFUSALS:
            self.latency.labels(use=use).observe(seconds)
        if reply.analysis is not None:
            self.faces.labels(platform=who.platform).inc(len(reply.analysis.faces))
        if reply.music is not None and reply.music.fallback_reason is not None:
            self.fallbacks.labels(reason=fallback_label(reply.music.fallback_reason)).inc()

    def correction_done(self, who: Sender, predicted: str, corrected: str) -> None:
        """Count one correction (emotions are validated by the core: a bounded label set)."""
        self.corrections.labels(predicted=predicted, corrected=corrected).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric, read now."""
        return generate_latest(self.registry)
