"""Music recommendations: tables, modes, and real spotipy against a fake Spotify API."""

import asyncio
import base64
import logging
import random
import socket
import threading
import time

import pytest
import requests

from bot.app import build_music, open_service
from bot.catalogue import TRACK_URL
from bot.music import (
    EMOTIONS,
    KEYWORDS,
    MODES,
    BadResponse,
    MusicRecommender,
    MusicServiceError,
    RateLimited,
    Recommendation,
    ServiceRefused,
    ServiceUnavailable,
    SpotifySearch,
    UnknownEmotion,
    music_mood,
    normalize_emotion,
    playlist_query,
)
from bot.picker import UnknownGenre
from bot.redact import REDACTED
from bot.settings import load_settings
from ml.labels import KOREAN_NAMES
from tests.fakes.spotify import FakeSpotify, fake_spotify, playlist_item

__all__ = ["fake_spotify"]  # the fixture, imported so pytest finds it


def client(fake: FakeSpotify, secret: str | None = None, **kwargs: object) -> SpotifySearch:
    return SpotifySearch(
        fake.client_id,
        secret or fake.client_secret,
        api_url=fake.api_url,
        token_url=fake.token_url,
        **kwargs,
    )


def recommender(fake: FakeSpotify, secret: str | None = None, **kwargs: object) -> MusicRecommender:
    return MusicRecommender(client(fake, secret), rng=random.Random(3), **kwargs)


def spotify_url(item: dict) -> str:
    return item["external_urls"]["spotify"]


# --- Tables and modes ------------------------------------------------------------------------


def test_emotions_and_korean_names():
    assert EMOTIONS == (
        "happy",
        "sad",
        "angry",
        "anxious",
        "hurt",
        "neutral",
        "fear",
        "disgust",
        "surprise",
        "embarrassed",
    )
    assert KOREAN_NAMES == {
        "happy": "기쁨",
        "sad": "슬픔",
        "angry": "분노",
        "anxious": "불안",
        "hurt": "상처",
        "neutral": "중립",
        "fear": "공포",
        "disgust": "혐오",
        "surprise": "놀람",
        "embarrassed": "당황",
    }


def test_keywords_keep_the_seed_table_with_the_typo_fixed():
    assert KEYWORDS["happy"] == (
        "happy",
        "delighted",
        "glad",
        "exciting",
        "pleased",
        "energetic",
        "cheerful",
        "satisfied",
        "fulfilled",
        "overjoyed",
    )
    assert KEYWORDS["neutral"][-1] == "unbiased"
    assert KEYWORDS["anxious"][:3] == ("anxious", "nervous", "uneasy")
    assert set(KEYWORDS) == {*EMOTIONS, "calm"}
    assert KEYWORDS["embarrassed"][:3] == ("embarrassed", "awkward", "flustered")
    assert {mood: len(set(words)) for mood, words in KEYWORDS.items()} == dict.fromkeys(
        KEYWORDS, 10
    )


def test_normalize_emotion_accepts_english_korean_and_aliases():
    names = ["happy", " Sad ", "ANGER", "sadness", "happiness", "surprised", "fearful"]
    names += ["disgusted", "anxiety", "기쁨", "상처", "중립", "공포", "혐오", "놀람", "당황"]
    assert [normalize_emotion(name) for name in names] == [
        "happy",
        "sad",
        "angry",
        "sad",
        "happy",
        "surprise",
        "fear",
        "disgust",
        "anxious",
        "happy",
        "hurt",
        "neutral",
        "fear",
        "disgust",
        "surprise",
        "embarrassed",
    ]


def test_unknown_emotion_names_the_bad_value():
    with pytest.raises(UnknownEmotion, match="'calm'") as caught:
        normalize_emotion("calm")
    assert isinstance(caught.value, ValueError)
    with pytest.raises(UnknownEmotion, match="None"):
        normalize_emotion(None)


def test_playlist_words_follow_the_mode():
    assert [music_mood(e, "match") for e in EMOTIONS] == list(EMOTIONS)
    assert {e: music_mood(e, "lift") for e in EMOTIONS} == {
        **dict.fromkeys(EMOTIONS, "happy"),
        "surprise": "surprise",
        "embarrassed": "happy",
    }
    assert MODES == ("match", "lift", "calm")
    assert {music_mood(e, "calm") for e in EMOTIONS} == {"calm"}
    assert music_mood("분노", "calm") == "calm"


def test_unknown_mode_names_the_bad_value():
    with pytest.raises(ValueError, match="'party'"):
        music_mood("happy", "party")


def test_playlist_query_is_genre_mood_and_one_more_word():
    assert playlist_query("happy", "k-pop", random.Random(3)) == "k-pop happy pleased"
    assert playlist_query("calm", None, random.Random(3)) == "calm soothing"


# --- The catalogue answer --------------------------------------------------------------------


async def test_no_credentials_gives_catalogue_tracks_offline():
    suggestion = await MusicRecommender(None, rng=random.Random(3)).suggest("기쁨", genre="K-Pop")

    assert (suggestion.emotion, suggestion.mode, suggestion.genre) == ("happy", "match", "k-pop")
    assert (suggestion.source, suggestion.fallback_reason) == ("catalogue", "not configured")
    tracks = suggestion.recommendations
    assert len(tracks) == 5 and {t.kind for t in tracks} == {"track"}
    assert all(t.url.startswith(TRACK_URL) and len(t.url) == len(TRACK_URL) + 22 for t in tracks)
    assert all(t.genre == "k-pop" and t.artists for t in tracks)
    assert all(0.7 <= t.valence <= 0.9 and 0.6 <= t.energy <= 0.8 for t in tracks)
    assert suggestion.track_ids == tuple(t.url.removeprefix(TRACK_URL) for t in tracks)


async def test_suggest_leaves_out_the_tracks_to_exclude():
    music = MusicRecommender(None, rng=random.Random(1))
    first = await music.suggest("sad")
    second = await music.suggest("sad", exclude_ids=first.track_ids)
    assert not set(first.track_ids) & set(second.track_ids)


async def test_unknown_genre_is_the_callers_to_handle():
    with pytest.raises(UnknownGenre, match="closest: k-pop"):
        await MusicRecommender(None).suggest("happy", genre="kpopp")


def test_recommendation_json_and_label():
    rec = Recommendation("Song", TRACK_URL + "x" * 22, "track", ("A", "B"), "jazz", 0.5, 0.25)
    assert rec.label == "Song — A, B"
    assert rec.as_json() == {
        "title": "Song",
        "artists": ["A", "B"],
        "url": TRACK_URL + "x" * 22,
        "kind": "track",
        "genre": "jazz",
        "valence": 0.5,
        "energy": 0.25,
    }
    assert Recommendation("Mix", "https://open.spotify.com/playlist/p", "playlist").label == "Mix"


# --- The Spotify extra: a playlist -----------------------------------------------------------


def tracks_of(suggestion) -> list[Recommendation]:
    return [r for r in suggestion.recommendations if r.kind == "track"]


async def test_spotify_adds_one_playlist_after_the_tracks(fake_spotify):
    suggestion = await recommender(fake_spotify).suggest("기쁨", genre=" k-pop ")

    [search] = fake_spotify.searches()
    query = search.params["q"]
    assert (search.params["type"], search.params["limit"]) == ("playlist", "5")
    genre, mood, word = query.split()
    assert (genre, mood) == ("k-pop", "happy") and word in KEYWORDS["happy"][1:]
    assert (suggestion.source, suggestion.fallback_reason) == ("catalogue+spotify", None)
    assert [r.kind for r in suggestion.recommendations] == ["track"] * 5 + ["playlist"]
    # The fake pads playlist results with a null first, as Spotify does.
    assert suggestion.recommendations[-1] == Recommendation(
        f"{query.title()} Mix 1", spotify_url(playlist_item(query, 0)), "playlist"
    )


async def test_lift_mode_looks_for_happy_playlists(fake_spotify):
    await recommender(fake_spotify).suggest("sad", mode="lift")

    assert fake_spotify.searches()[0].params["q"].split()[0] == "happy"


async def test_credentials_are_sent_properly(fake_spotify):
    await recommender(fake_spotify).suggest("happy")

    basic = base64.b64encode(b"fake-client-id:fake-client-secret-9f3k").decode()
    [token_request] = fake_spotify.token_requests()
    assert (token_request.method, token_request.body) == ("POST", "grant_type=client_credentials")
    assert token_request.headers["authorization"] == f"Basic {basic}"
    assert [r.headers["authorization"] for r in fake_spotify.searches()] == [
        "Bearer fake-access-token-1",
    ]


def test_market_is_passed_on(fake_spotify):
    client(fake_spotify, market="KR").search_playlists("calm", 1)

    assert fake_spotify.searches()[0].params == {
        "q": "calm",
        "limit": "1",
        "offset": "0",
        "type": "playlist",
        "market": "KR",
    }


def test_playlist_search_skips_null_items(fake_spotify):
    found = client(fake_spotify).search_playlists("calm", 3)

    assert found == [
        Recommendation("Calm Mix 1", spotify_url(playlist_item("calm", 0)), "playlist"),
        Recommendation("Calm Mix 2", spotify_url(playlist_item("calm", 1)), "playlist"),
    ]


def test_search_tolerates_nulls_missing_fields_and_foreign_links(fake_spotify):
    fake_spotify.search_behaviour = "sparse"

    found = client(fake_spotify).search_playlists("calm", 10)

    first = spotify_url(playlist_item("calm", 0))
    assert found == [
        Recommendation("Calm Mix 2", spotify_url(playlist_item("calm", 1)), "playlist"),
        Recommendation("Calm Mix 1", first, "playlist"),
        Recommendation("Calm Mix 1", first, "playlist"),
    ]


def test_more_than_ten_results_is_refused_before_asking(fake_spotify):
    with pytest.raises(ValueError, match="11"):
        client(fake_spotify).search_playlists("calm", 11)
    assert fake_spotify.requests == []


def test_fake_refuses_more_than_ten_results_like_spotify(fake_spotify):
    token = requests.post(
        fake_spotify.token_url,
        data={"grant_type": "client_credentials"},
        auth=(fake_spotify.client_id, fake_spotify.client_secret),
        timeout=5,
    ).json()["access_token"]

    answer = requests.get(
        fake_spotify.api_url + "search",
        params={"q": "calm", "type": "track", "limit": 11},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )

    assert (answer.status_code, answer.json()) == (
        400,
        {"error": {"status": 400, "message": "Invalid limit"}},
    )


# --- A Spotify failure never costs the catalogue answer --------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "reason", "searches"),
    [
        ("rate_limited", "rate limited", 1),  # Retry-After 30 > 1 s cap: give up at once
        ("forbidden", "refused (403)", 1),
        ("garbage", "bad response", 1),
        ("wrong_shape", "bad response", 1),
        ("empty", "no results", 1),
        ("server_error", "server error", 3),  # two retries, 0.2 s + 0.4 s
    ],
)
async def test_search_failures_keep_the_tracks_quickly(fake_spotify, behaviour, reason, searches):
    fake_spotify.search_behaviour = behaviour

    started = time.monotonic()
    suggestion = await recommender(fake_spotify).suggest("happy", genre="k-pop")
    elapsed = time.monotonic() - started

    assert (suggestion.source, suggestion.fallback_reason) == ("catalogue", reason)
    assert [r.kind for r in suggestion.recommendations] == ["track"] * 5
    assert len(fake_spotify.searches()) == searches
    assert elapsed < 1.5  # well inside the 3 s deadline, and no 30 s Retry-After sleep


async def test_hanging_spotify_is_cut_off_at_the_deadline(fake_spotify):
    fake_spotify.search_behaviour = "hang"
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    # The HTTP timeout is longer than the deadline: only the deadline can end this.
    music = MusicRecommender(client(fake_spotify, timeout_s=5.0), deadline_s=0.5)
    suggestion = await music.suggest("happy")
    elapsed = time.monotonic() - started
    ticker.cancel()
    fake_spotify.release()  # lets the abandoned spotipy thread end before the loop closes

    assert (suggestion.source, suggestion.fallback_reason) == ("catalogue", "timeout")
    assert len(tracks_of(suggestion)) == 5
    assert 0.5 <= elapsed < 1.0
    assert ticks >= 5  # the event loop kept running while spotipy blocked


async def test_short_retry_after_is_honoured(fake_spotify):
    fake_spotify.retry_after = 1
    fake_spotify.script_search("rate_limited")

    started = time.monotonic()
    suggestion = await recommender(fake_spotify).suggest("happy")
    elapsed = time.monotonic() - started

    assert (suggestion.source, len(suggestion.recommendations)) == ("catalogue+spotify", 6)
    assert len(fake_spotify.searches()) == 2
    assert 1.0 <= elapsed < 2.0


async def test_retry_after_beyond_the_deadline_gives_up_at_once(fake_spotify):
    fake_spotify.retry_after = 1
    fake_spotify.search_behaviour = "rate_limited"

    started = time.monotonic()
    suggestion = await recommender(fake_spotify, deadline_s=0.5).suggest("happy")

    assert suggestion.fallback_reason == "rate limited"
    assert time.monotonic() - started < 0.3
    assert len(fake_spotify.searches()) == 1


async def test_server_error_once_then_spotify_answers(fake_spotify):
    fake_spotify.script_search("server_error")

    suggestion = await recommender(fake_spotify).suggest("happy")

    assert (suggestion.source, suggestion.fallback_reason) == ("catalogue+spotify", None)
    assert len(fake_spotify.searches()) == 2


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("rate_limited", "rate limited"),
        ("server_error", "server error"),
        ("garbage", "bad response"),
        ("wrong_shape", "bad response"),
        ("hang", "timeout"),
    ],
)
async def test_token_failures_keep_the_tracks(fake_spotify, behaviour, reason):
    fake_spotify.token_behaviour = behaviour

    started = time.monotonic()
    suggestion = await recommender(fake_spotify, deadline_s=1.0).suggest("happy")

    fake_spotify.release()

    assert (suggestion.source, suggestion.fallback_reason) == ("catalogue", reason)
    assert len(tracks_of(suggestion)) == 5
    assert time.monotonic() - started < 1.3
    assert fake_spotify.searches() == []


async def test_wrong_credentials_are_refused(fake_spotify):
    suggestion = await recommender(fake_spotify, secret="wrong-secret").suggest("happy")

    assert suggestion.fallback_reason == "refused (400)"


async def test_unreachable_spotify_keeps_the_tracks():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    spotify = SpotifySearch(
        "id",
        "secret",
        api_url=f"http://127.0.0.1:{port}/v1/",
        token_url=f"http://127.0.0.1:{port}/api/token",
    )

    suggestion = await MusicRecommender(spotify).suggest("happy")

    assert (suggestion.source, suggestion.fallback_reason) == ("catalogue", "unreachable")
    assert len(tracks_of(suggestion)) == 5


def test_search_errors_have_names(fake_spotify):
    spotify = client(fake_spotify)
    fake_spotify.search_behaviour = "rate_limited"
    with pytest.raises(RateLimited) as rate_limited:
        spotify.search_playlists("calm")
    fake_spotify.search_behaviour = "forbidden"
    with pytest.raises(ServiceRefused) as refused:
        spotify.search_playlists("calm")
    fake_spotify.search_behaviour = "server_error"
    with pytest.raises(ServiceUnavailable) as unavailable:
        spotify.search_playlists("calm")
    fake_spotify.search_behaviour = "garbage"
    with pytest.raises(BadResponse) as bad:
        spotify.search_playlists("calm")

    assert rate_limited.value.retry_after == 30.0
    assert [str(e.value) for e in (rate_limited, refused, unavailable, bad)] == [
        "Spotify rate limit reached (retry after 30 s)",
        "Spotify refused the request (HTTP 403)",
        "Spotify is unavailable (server error)",
        "Spotify answered with something unexpected (no playlists.items)",
    ]


# --- Secrets ---------------------------------------------------------------------------------


def error_texts(error: BaseException | None) -> str:
    texts = []
    while error is not None:
        texts += [str(error), repr(error)]
        error = error.__cause__ or error.__context__
    return "\n".join(texts)


async def test_secret_never_logged(fake_spotify, caplog):
    caplog.set_level(logging.DEBUG)
    basic = base64.b64encode(b"fake-client-id:fake-client-secret-9f3k").decode()

    await recommender(fake_spotify).suggest("happy")
    for behaviour in ("rate_limited", "forbidden", "garbage"):
        fake_spotify.search_behaviour = behaviour
        await recommender(fake_spotify).suggest("happy")
    fake_spotify.search_behaviour = "normal"
    await recommender(fake_spotify, secret="wrong-secret").suggest("happy")

    assert f"Basic {REDACTED}" in caplog.text  # spotipy does log the header at DEBUG
    assert "fake-client-secret-9f3k" not in caplog.text
    assert basic not in caplog.text
    assert "fake-access-token-1" not in caplog.text


def test_secret_never_in_errors(fake_spotify):
    errors: list[MusicServiceError] = []
    for behaviour in ("rate_limited", "forbidden", "server_error", "garbage", "wrong_shape"):
        fake_spotify.token_behaviour = behaviour
        with pytest.raises(MusicServiceError) as caught:
            client(fake_spotify).search_playlists("calm")
        errors.append(caught.value)
    fake_spotify.token_behaviour = "normal"
    with pytest.raises(ServiceRefused) as refused:
        client(fake_spotify, secret="wrong-secret").search_playlists("calm")
    errors.append(refused.value)

    texts = "\n".join(error_texts(error) for error in errors)
    assert "fake-client-secret-9f3k" not in texts
    assert base64.b64encode(b"fake-client-id:fake-client-secret-9f3k").decode() not in texts


def test_missing_credentials_rejected_without_echoing_them():
    with pytest.raises(ValueError) as caught:
        SpotifySearch("", "top-secret")
    assert "top-secret" not in str(caught.value)


# --- The fake itself -------------------------------------------------------------------------


def test_fake_closes_cleanly_while_a_request_hangs():
    fake = FakeSpotify().start()
    fake.search_behaviour = "hang"
    outcome: list[str] = []

    def call() -> None:
        try:
            requests.get(fake.api_url + "search", params={"q": "x"}, timeout=10)
        except requests.RequestException as exc:
            outcome.append(type(exc).__name__)

    caller = threading.Thread(target=call)
    caller.start()
    while not fake.searches():
        time.sleep(0.01)
    started = time.monotonic()
    fake.close()
    caller.join(timeout=5)

    assert time.monotonic() - started < 1.0
    assert outcome == ["ConnectionError"]


def test_fake_rejects_unknown_behaviours(fake_spotify):
    with pytest.raises(ValueError, match="'flaky'"):
        fake_spotify.search_behaviour = "flaky"


# --- Settings --------------------------------------------------------------------------------


def test_settings_reach_the_picker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env
    music = build_music(load_settings(MOODBOT_ALLOW_EXPLICIT="true", MOODBOT_MUSIC_COUNT="7"))
    assert (music.count, music.allow_explicit) == (7, True)
    assert len(music.pick("angry", genre="hip-hop").tracks) == 7
    clean = build_music(load_settings()).pick("angry", genre="hip-hop", count=10)
    assert not any(t.explicit for t in clean.tracks)


async def test_an_unknown_default_genre_stops_start_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(MOODBOT_GENRE="kpopp", MOODBOT_DB=str(tmp_path / "m.db"))
    with pytest.raises(UnknownGenre, match="closest: k-pop"):
        async with open_service(settings):
            pass
