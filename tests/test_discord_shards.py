"""Discord sharding as far as it goes without a gateway: configuration, refusals, which shards.

A real gateway is out of reach offline; what is checked is that DISCORD_SHARD_COUNT and
DISCORD_SHARD_IDS reach discord.py's AutoShardedBot, and that it launches exactly those shards.
"""

from __future__ import annotations

from typing import Any

import discord
import pytest
import yarl

from bot.core import MoodService
from bot.music import MusicRecommender
from bot.settings import SettingsError, load_settings
from bot.transports.discord_bot import DiscordConfig, MoodBot, ShardedMoodBot, build_bot

TOKEN = "discord-token"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in ("DISCORD_SHARD_COUNT", "DISCORD_SHARD_IDS", "DISCORD_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def shards(**env: str) -> tuple[int | None, tuple[int, ...] | None]:
    return load_settings(DISCORD_BOT_TOKEN=TOKEN, **env).discord_shards


def test_shard_settings() -> None:
    assert shards() == (None, None)
    assert shards(DISCORD_SHARD_COUNT="4") == (4, None)
    assert shards(DISCORD_SHARD_COUNT="4", DISCORD_SHARD_IDS="3, 1") == (4, (1, 3))
    assert shards(DISCORD_SHARD_COUNT="4", DISCORD_SHARD_IDS=" ") == (4, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DISCORD_SHARD_IDS": "0"}, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "2"}, "from 0 to 1"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "-1"}, "from 0 to 1"),
        ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "1,1"}, "distinct"),
        ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "one"}, "separated by commas"),
        ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "0,,1"}, "separated by commas"),
        ({"DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT"),
        ({"DISCORD_SHARD_COUNT": "two"}, "DISCORD_SHARD_COUNT"),
    ],
)
def test_bad_shard_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(DISCORD_BOT_TOKEN=TOKEN, **env)


@pytest.fixture
def service(history) -> MoodService:
    return MoodService(None, MusicRecommender(None), history)  # type: ignore[arg-type]


async def test_unsharded_by_default(service: MoodService) -> None:
    bot = build_bot(service, DiscordConfig.from_settings(load_settings(DISCORD_BOT_TOKEN=TOKEN)))
    try:
        assert type(bot) is MoodBot and not isinstance(bot, discord.AutoShardedClient)
    finally:
        await bot.close()


async def test_a_replica_launches_exactly_its_shards(
    service: MoodService, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        DISCORD_BOT_TOKEN=TOKEN, DISCORD_SHARD_COUNT="4", DISCORD_SHARD_IDS="2,3"
    )
    bot = build_bot(service, DiscordConfig.from_settings(settings))
    launched: list[tuple[int, bool]] = []

    async def launch_shard(gateway: yarl.URL, shard_id: int, *, initial: bool = False) -> Any:
        launched.append((shard_id, initial))

    monkeypatch.setattr(bot, "launch_shard", launch_shard)
    await bot._async_setup_hook()  # what login() does first (it would then call Discord)
    try:
        assert isinstance(bot, ShardedMoodBot) and isinstance(bot, discord.AutoShardedClient)
        assert (bot.shard_count, bot.shard_ids) == (4, [2, 3])
        await bot.launch_shards()  # with a count given, discord.py asks Discord nothing
        assert launched == [(2, True), (3, False)]
        # Still moodbot: its cogs load the same way.
        bot.sync_commands = False
        await bot.setup_hook()
        assert {"Selfies", "History", "GroupMix", "Preferences"} <= set(bot.cogs)
    finally:
        await bot.close()
