"""Settings from environment variables and `.env`, validated once at start-up."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.catalogue import DEFAULT_PATH as DEFAULT_CATALOGUE
from bot.history import MAX_REMEMBERED_TRACKS
from bot.picker import DEFAULT_COUNT, MAX_COUNT
from ml.decode import DecodeLimits
from ml.engine import EngineConfig
from ml.models import DEFAULT_MODEL

TELEGRAM_API = "https://api.telegram.org/bot"
# Telegram's rule for the webhook secret token: 1-256 of these characters.
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


class SettingsError(Exception):
    """The configuration is invalid."""


class Settings(BaseSettings):
    """Every knob of moodbot, each read from the environment variable named by its alias."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    telegram_bot_token: SecretStr | None = Field(None, alias="TELEGRAM_BOT_TOKEN")
    telegram_base_url: str = Field(TELEGRAM_API, alias="TELEGRAM_BASE_URL")
    telegram_base_file_url: str | None = Field(None, alias="TELEGRAM_BASE_FILE_URL")
    telegram_webhook_url: str | None = Field(None, alias="TELEGRAM_WEBHOOK_URL")
    telegram_webhook_listen: str = Field("127.0.0.1", alias="TELEGRAM_WEBHOOK_LISTEN")
    telegram_webhook_port: int = Field(8443, ge=1, le=65535, alias="TELEGRAM_WEBHOOK_PORT")
    telegram_webhook_secret: SecretStr | None = Field(None, alias="TELEGRAM_WEBHOOK_SECRET")
    # Webhook + PostgreSQL: a claimed update whose replica died is handled elsewhere after this.
    inbox_lease_s: float = Field(60.0, ge=1, le=3600, alias="MOODBOT_INBOX_LEASE_S")
    discord_bot_token: SecretStr | None = Field(None, alias="DISCORD_BOT_TOKEN")
    discord_sync_commands: bool = Field(True, alias="DISCORD_SYNC_COMMANDS")
    discord_guild_id: int | None = Field(None, gt=0, alias="DISCORD_GUILD_ID")
    # Sharding: the bot's total shard count, and which of them this replica runs ("0,1";
    # empty: all of them). Replicas split the gateway by running disjoint shard ids.
    discord_shard_count: int | None = Field(None, ge=1, le=10_000, alias="DISCORD_SHARD_COUNT")
    discord_shard_ids: str | None = Field(None, alias="DISCORD_SHARD_IDS")
    spotify_client_id: str | None = Field(None, alias="SPOTIFY_CLIENT_ID")
    spotify_client_secret: SecretStr | None = Field(None, alias="SPOTIFY_CLIENT_SECRET")
    spotify_api_url: str = Field("https://api.spotify.com/v1/", alias="SPOTIFY_API_URL")
    spotify_token_url: str = Field(
        "https://accounts.spotify.com/api/token", alias="SPOTIFY_TOKEN_URL"
    )
    spotify_market: str | None = Field(None, alias="SPOTIFY_MARKET")
    # 2 s leaves room for the rest of the reply inside the 3 s we promise when Spotify is slow.
    music_deadline_s: float = Field(2.0, gt=0, le=30, alias="MOODBOT_MUSIC_DEADLINE_S")

    catalogue_path: Path = Field(DEFAULT_CATALOGUE, alias="MOODBOT_CATALOGUE")
    allow_explicit: bool = Field(False, alias="MOODBOT_ALLOW_EXPLICIT")
    music_count: int = Field(DEFAULT_COUNT, ge=1, le=MAX_COUNT, alias="MOODBOT_MUSIC_COUNT")
    # A person is not offered a track again until this many others came after it (0: off).
    music_memory: int = Field(50, ge=0, le=MAX_REMEMBERED_TRACKS, alias="MOODBOT_MUSIC_MEMORY")

    # A SQLite file (the default), or a postgresql:// URL for several replicas (docs/DEPLOY.md).
    # repr=False: a URL may hold a password.
    database: str = Field("moodbot.db", min_length=1, repr=False, alias="MOODBOT_DB")
    model: str = Field(DEFAULT_MODEL, alias="MOODBOT_MODEL")
    # Test-only: "stub" answers every photo "happy" without looking (ml/stub.py), so that
    # deployment tests can start several replicas cheaply. Never set it for users.
    engine: Literal["model", "stub"] = Field("model", alias="MOODBOT_ENGINE")
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0, alias="MOODBOT_MAX_IMAGE_BYTES")
    max_image_pixels: int = Field(50_000_000, gt=0, alias="MOODBOT_MAX_IMAGE_PIXELS")
    unsure_below: float = Field(0.45, ge=0, le=1, alias="MOODBOT_UNSURE_BELOW")
    queue_size: int = Field(32, ge=1, le=10_000, alias="MOODBOT_QUEUE_SIZE")
    max_batch: int = Field(16, ge=1, le=256, alias="MOODBOT_MAX_BATCH")
    group_window_hours: float = Field(24.0, gt=0, le=24 * 365, alias="MOODBOT_GROUP_WINDOW_HOURS")
    default_genre: str | None = Field(None, max_length=60, alias="MOODBOT_GENRE")
    log_level: str = Field("INFO", alias="MOODBOT_LOG_LEVEL")
    rate_limit_burst: int = Field(6, ge=1, le=1000, alias="MOODBOT_RATE_LIMIT_BURST")
    rate_limit_per_minute: float = Field(12.0, ge=0, le=6000, alias="MOODBOT_RATE_LIMIT_PER_MINUTE")
    # Set: the per-user rate limit is kept in Redis and holds across replicas (docs/DEPLOY.md).
    redis_url: str | None = Field(None, repr=False, alias="MOODBOT_REDIS_URL")
    redis_timeout_s: float = Field(0.25, gt=0, le=5, alias="MOODBOT_REDIS_TIMEOUT_S")
    shutdown_grace_s: float = Field(20.0, ge=0, le=600, alias="MOODBOT_SHUTDOWN_GRACE_S")
    # 0 keeps history until the user runs /forget; N deletes moods older than N days.
    retention_days: int = Field(365, ge=0, le=36500, alias="MOODBOT_RETENTION_DAYS")
    web_enabled: bool = Field(False, alias="MOODBOT_WEB")
    web_host: str = Field("127.0.0.1", alias="MOODBOT_WEB_HOST")
    web_port: int = Field(8080, ge=1, le=65535, alias="MOODBOT_WEB_PORT")
    # Signs the "Not quite?" buttons; unset: a random one per process (older buttons expire).
    button_secret: SecretStr | None = Field(None, alias="MOODBOT_BUTTON_SECRET")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator(
        "telegram_bot_token",
        "discord_bot_token",
        "spotify_client_secret",
        "telegram_webhook_secret",
        "button_secret",
        "spotify_client_id",
        "spotify_market",
        "default_genre",
        "telegram_base_file_url",
        "telegram_webhook_url",
        "discord_guild_id",
        "discord_shard_count",
        "discord_shard_ids",
        "redis_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `.env.example` copies leave keys present but empty: treat them as not configured.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database", mode="before")
    @classmethod
    def _path_or_url(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value.strip()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value.strip() if value else None

    @field_validator("telegram_base_url", "telegram_base_file_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # python-telegram-bot appends the token right after it: no trailing slash.
        value = value.strip().rstrip("/")
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value.strip()).scheme != "https":
            raise ValueError("Telegram delivers webhooks only to https:// URLs")
        return value.strip() if value else None

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _WEBHOOK_SECRET.fullmatch(value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @model_validator(mode="after")
    def _discord_shards(self) -> Settings:
        self.discord_shards  # noqa: B018 (raises ValueError on bad values)
        return self

    @property
    def discord_shards(self) -> tuple[int | None, tuple[int, ...] | None]:
        """(DISCORD_SHARD_COUNT, DISCORD_SHARD_IDS as numbers); (None, None) when unsharded."""
        count, text = self.discord_shard_count, self.discord_shard_ids
        if text is None:
            return count, None
        if count is None:
            raise ValueError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT")
        try:
            ids = tuple(int(part) for part in text.split(","))
        except ValueError:
            raise ValueError(
                f"DISCORD_SHARD_IDS must be shard numbers separated by commas, got {text!r}"
            ) from None
        if len(set(ids)) != len(ids) or not all(0 <= i < count for i in ids):
            raise ValueError(
                f"DISCORD_SHARD_IDS must be distinct numbers from 0 to {count - 1}"
                f" (DISCORD_SHARD_COUNT={count}), got {text!r}"
            )
        return count, tuple(sorted(ids))

    @model_validator(mode="after")
    def _spotify_pair(self) -> Settings:
        if bool(self.spotify_client_id) != bool(self.spotify_client_secret):
            raise ValueError(
                "SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET must be set together (or neither)"
            )
        return self

    @model_validator(mode="after")
    def _telegram_file_url(self) -> Settings:
        if self.telegram_base_file_url is None and not self.telegram_base_url.endswith("/bot"):
            raise ValueError(
                "TELEGRAM_BASE_FILE_URL must be set when TELEGRAM_BASE_URL does not end in /bot"
            )
        return self

    @property
    def telegram_file_url(self) -> str:
        """Where files download from: TELEGRAM_BASE_FILE_URL, or derived (/bot -> /file/bot)."""
        if self.telegram_base_file_url:
            return self.telegram_base_file_url
        return self.telegram_base_url.removesuffix("/bot") + "/file/bot"

    @property
    def server_urls(self) -> list[str]:
        """The URLs of the database and other servers, which may hold passwords."""
        urls = [self.database, self.redis_url or ""]
        return [url for url in urls if "://" in url]

    @property
    def spotify_configured(self) -> bool:
        return bool(self.spotify_client_id and self.spotify_client_secret)

    def engine_config(self) -> EngineConfig:
        limits = DecodeLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)
        return EngineConfig(
            limits=limits,
            unsure_below=self.unsure_below,
            queue_size=self.queue_size,
            max_batch=self.max_batch,
        )


def load_settings(**overrides: object) -> Settings:
    """Read the settings; SettingsError lists every bad variable (never its secret value)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            problems.append(f"{where}: {error['msg']}")
        raise SettingsError("Invalid configuration:\n  " + "\n  ".join(problems)) from None
