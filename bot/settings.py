"""Settings from environment variables and `.env`, validated once at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ml.decode import DecodeLimits
from ml.engine import EngineConfig


class SettingsError(Exception):
    """The configuration is invalid."""


class Settings(BaseSettings):
    """Every knob of moodbot, each read from the environment variable named by its alias."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    telegram_bot_token: SecretStr | None = Field(None, alias="TELEGRAM_BOT_TOKEN")
    discord_bot_token: SecretStr | None = Field(None, alias="DISCORD_BOT_TOKEN")
    spotify_client_id: str | None = Field(None, alias="SPOTIFY_CLIENT_ID")
    spotify_client_secret: SecretStr | None = Field(None, alias="SPOTIFY_CLIENT_SECRET")
    spotify_api_url: str = Field("https://api.spotify.com/v1/", alias="SPOTIFY_API_URL")
    spotify_token_url: str = Field(
        "https://accounts.spotify.com/api/token", alias="SPOTIFY_TOKEN_URL"
    )
    spotify_market: str | None = Field(None, alias="SPOTIFY_MARKET")
    music_deadline_s: float = Field(3.0, gt=0, le=30, alias="MOODBOT_MUSIC_DEADLINE_S")

    db_path: Path = Field(Path("moodbot.db"), alias="MOODBOT_DB")
    model: str = Field("mini-xception", alias="MOODBOT_MODEL")
    max_image_bytes: int = Field(20 * 1024 * 1024, gt=0, alias="MOODBOT_MAX_IMAGE_BYTES")
    max_image_pixels: int = Field(50_000_000, gt=0, alias="MOODBOT_MAX_IMAGE_PIXELS")
    unsure_below: float = Field(0.45, ge=0, le=1, alias="MOODBOT_UNSURE_BELOW")
    queue_size: int = Field(32, ge=1, le=10_000, alias="MOODBOT_QUEUE_SIZE")
    max_batch: int = Field(16, ge=1, le=256, alias="MOODBOT_MAX_BATCH")
    group_window_hours: float = Field(24.0, gt=0, le=24 * 365, alias="MOODBOT_GROUP_WINDOW_HOURS")
    default_genre: str | None = Field(None, max_length=60, alias="MOODBOT_GENRE")
    log_level: str = Field("INFO", alias="MOODBOT_LOG_LEVEL")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"unknown log level {value!r}")
        return level

    @field_validator(
        "telegram_bot_token", "discord_bot_token", "spotify_client_secret", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `.env.example` copies leave keys present but empty: treat them as not configured.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("spotify_client_id", "spotify_market", "default_genre", mode="before")
    @classmethod
    def _blank_text_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _spotify_pair(self) -> Settings:
        if bool(self.spotify_client_id) != bool(self.spotify_client_secret):
            raise ValueError(
                "SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET must be set together (or neither)"
            )
        return self

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
