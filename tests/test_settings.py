"""Settings: environment variables and .env, validated with clear messages, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings

SECRET = "s3cr3t-value-that-must-not-leak"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "TELEGRAM_BOT_TOKEN",
        "DISCORD_BOT_TOKEN",
        "SPOTIFY_CLIENT_ID",
        "SPOTIFY_CLIENT_SECRET",
        "MOODBOT_DB",
        "MOODBOT_MODEL",
        "MOODBOT_QUEUE_SIZE",
        "MOODBOT_LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's checkout


def test_defaults_need_no_configuration() -> None:
    settings = load_settings()
    assert settings.database == "moodbot.db"
    assert settings.model == "moodnet-trio"
    assert settings.telegram_bot_token is None and not settings.spotify_configured


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"SPOTIFY_CLIENT_ID=abc\nSPOTIFY_CLIENT_SECRET={SECRET}\n")
    monkeypatch.setenv("MOODBOT_DB", "/data/moods.db")
    monkeypatch.setenv("MOODBOT_QUEUE_SIZE", "7")
    settings = load_settings()
    assert settings.database == "/data/moods.db"
    assert settings.engine_config().queue_size == 7
    assert settings.spotify_configured
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_blank_values_from_a_copied_example_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "")
    monkeypatch.setenv("SPOTIFY_CLIENT_ID", " ")
    assert load_settings().telegram_bot_token is None
    assert not load_settings().spotify_configured


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "MOODBOT_QUEUE_SIZE",
            "0",
            "MOODBOT_QUEUE_SIZE: Input should be greater than or equal to 1",
        ),
        ("MOODBOT_QUEUE_SIZE", "many", "MOODBOT_QUEUE_SIZE: Input should be a valid integer"),
        ("MOODBOT_LOG_LEVEL", "loud", "unknown log level 'loud'"),
    ],
)
def test_bad_values_are_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_half_spotify_configuration_is_refused_without_echoing_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPOTIFY_CLIENT_SECRET", SECRET)
    with pytest.raises(SettingsError, match="must be set together") as caught:
        load_settings()
    assert SECRET not in str(caught.value)


def test_a_database_url_keeps_its_password_out_of_repr_and_logs() -> None:
    from bot.runner import secrets_of

    url = "postgresql://bot:pg-s3cret@db.internal:5432/moods"
    settings = load_settings(MOODBOT_DB=url)
    assert settings.database == url
    assert "pg-s3cret" not in repr(settings)
    assert "pg-s3cret" in secrets_of(settings)  # the log redactor hides it
    assert "pg-s3cret" not in secrets_of(load_settings(MOODBOT_DB="moods.db"))


def test_redis_url_is_checked_and_its_password_hidden() -> None:
    from bot.runner import build_limiter, secrets_of

    settings = load_settings(MOODBOT_REDIS_URL="redis://:rd-s3cret@cache:6379/0")
    assert "rd-s3cret" not in repr(settings) and "rd-s3cret" in secrets_of(settings)
    assert type(build_limiter(settings)).__name__ == "RedisRateLimiter"
    assert type(build_limiter(load_settings())).__name__ == "RateLimiter"
    assert load_settings(MOODBOT_REDIS_URL=" ").redis_url is None
    with pytest.raises(SettingsError, match="MOODBOT_REDIS_URL"):
        load_settings(MOODBOT_REDIS_URL="http://cache:6379")
