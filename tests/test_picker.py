"""Moods as places, modes as moves, and the picker on the shipped catalogue (numbers, not order)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from statistics import mean

import pytest

from bot.catalogue import Catalogue, Track
from bot.moodspace import (
    HALF_WIDTH,
    MODES,
    PLACES,
    SETTLED_MOODS,
    Target,
    blend,
    describing_mood,
    nearest_mood,
    recency_weight,
    target_for,
)
from bot.picker import Picker, UnknownGenre
from ml.labels import MUSIC_MOODS
from tests.fakes.catalogue import make_catalogue, row, track_id

REPO_ROOT = Path(__file__).resolve().parent.parent
NEGATIVE = ("sad", "angry", "anxious", "hurt", "fear", "disgust")


@pytest.fixture(scope="module")
def picker() -> Picker:
    return Picker(Catalogue.load())


def pick(picker: Picker, mood: str, mode: str = "match", **options) -> tuple[Track, ...]:
    return picker.pick(target_for(mood, mode), rng=random.Random(7), **options).tracks


def valence(tracks: tuple[Track, ...]) -> float:
    return mean(t.valence for t in tracks)


def energy(tracks: tuple[Track, ...]) -> float:
    return mean(t.energy for t in tracks)


# --- the table -----------------------------------------------------------------------------------


def test_every_mood_the_model_can_give_has_a_place() -> None:
    assert set(PLACES) == set(MUSIC_MOODS)
    assert "embarrassed" in PLACES


def test_the_docs_table_is_the_code_table() -> None:
    docs = (REPO_ROOT / "docs" / "MUSIC.md").read_text(encoding="utf-8")
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in docs.splitlines()]
    # The places table has six columns (the measured picks further down have four).
    rows = {row[0]: row[1:] for row in cells if row[0] in PLACES and len(row) == 6}
    expected = {}
    for mood, place in PLACES.items():
        (v_low, v_high), (e_low, e_high) = place.around()
        expected[mood] = [
            f"{place.valence:.2f}",
            f"{place.energy:.2f}",
            f"{v_low:g}-{v_high:g}",
            f"{e_low:g}-{e_high:g}",
            place.why,
        ]
    assert rows == expected


def test_lift_is_a_bounded_step_up_in_valence() -> None:
    for mood in PLACES:
        match, lift = target_for(mood), target_for(mood, "lift")
        assert match.valence <= lift.valence <= match.valence + 0.25
        assert lift.valence <= max(0.85, match.valence)
    # Grief goes to hopeful, not to party music: sad's lift stays below happy's place.
    assert target_for("sad", "lift") == Target(0.55, 0.39)
    assert target_for("sad", "lift").valence < PLACES["happy"].valence - 0.2


def test_calm_lowers_energy_and_moves_valence_towards_middling_high() -> None:
    assert target_for("angry", "calm") == Target(0.425, 0.55)
    assert target_for("happy", "calm") == Target(0.7, 0.4)
    for mood in PLACES:
        match, calm = target_for(mood), target_for(mood, "calm")
        assert calm.energy <= match.energy and calm.energy >= min(match.energy, 0.2)
        assert abs(calm.valence - 0.6) <= abs(match.valence - 0.6)


def test_moves_are_described_by_a_settled_place() -> None:
    # Calming anger must not read "restless, uneasy songs".
    assert describing_mood("angry", "calm", target_for("angry", "calm")) == "embarrassed"
    assert describing_mood("sad", "lift", target_for("sad", "lift")) == "neutral"
    assert describing_mood("sad", "match", target_for("sad")) == "sad"
    for mood in PLACES:
        for mode in ("lift", "calm"):
            assert describing_mood(mood, mode, target_for(mood, mode)) in SETTLED_MOODS
    assert describing_mood("happy", "match", Target(0.2, 0.65), blended=True) == "fear"


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'party'"):
        target_for("happy", "party")


def test_group_blend_weighs_confidence_and_recency() -> None:
    happy, sad = target_for("happy"), target_for("sad")
    assert blend([(happy, 1.0), (sad, 1.0)]) == Target(0.55, 0.5)
    assert blend([(happy, 0.9), (sad, 0.3)]) == Target(0.675, 0.6)
    assert recency_weight(0) == 1.0 and recency_weight(6) == 0.5 and recency_weight(12) == 0.25
    # A sad selfie from 12 hours ago counts a quarter as much as a happy one now.
    assert blend([(happy, recency_weight(0)), (sad, recency_weight(12))]) == Target(0.7, 0.62)
    assert nearest_mood(Target(0.7, 0.62)) == "happy"


# --- picks on the shipped catalogue ----------------------------------------------------------


def test_happy_picks_are_far_higher_in_valence_than_sad_picks(picker: Picker) -> None:
    happy, sad = pick(picker, "happy"), pick(picker, "sad")
    assert valence(happy) >= 0.75 and valence(sad) <= 0.35
    assert valence(happy) - valence(sad) >= 0.4


def test_angry_picks_are_far_higher_in_energy_than_calm_picks(picker: Picker) -> None:
    angry, calm = pick(picker, "angry"), pick(picker, "calm")
    assert energy(angry) >= 0.8 and energy(calm) <= 0.3
    assert energy(angry) - energy(calm) >= 0.5


@pytest.mark.parametrize("mode", MODES)
def test_every_pick_lies_in_its_target_region(picker: Picker, mode: str) -> None:
    for mood in PLACES:
        target = target_for(mood, mode)
        result = picker.pick(target, rng=random.Random(1))
        assert not result.widened and len(result.tracks) == 5
        for track in result.tracks:
            assert abs(track.valence - target.valence) <= HALF_WIDTH, (mood, track)
            assert abs(track.energy - target.energy) <= HALF_WIDTH, (mood, track)


def test_lift_raises_valence_and_calm_lowers_energy(picker: Picker) -> None:
    for mood in NEGATIVE:
        assert valence(pick(picker, mood, "lift")) >= valence(pick(picker, mood)) + 0.2, mood
    for mood in MUSIC_MOODS:
        if PLACES[mood].energy > 0.25:
            assert energy(pick(picker, mood, "calm")) <= energy(pick(picker, mood)) - 0.05, mood


def test_picks_have_distinct_artists_and_no_explicit_tracks(picker: Picker) -> None:
    for mood in ("angry", "happy", "sad"):
        tracks = pick(picker, mood, count=10, genre="hip-hop")
        assert len({t.artists[0].casefold() for t in tracks}) == 10
        assert not any(t.explicit for t in tracks)


def test_explicit_tracks_only_when_allowed(picker: Picker) -> None:
    allowed = pick(picker, "angry", genre="hip-hop", count=10, allow_explicit=True)
    assert any(t.explicit for t in allowed)


def test_no_track_repeats_within_the_remembered_ones(picker: Picker) -> None:
    heard: list[str] = []
    for _ in range(20):
        tracks = pick(picker, "sad", exclude_ids=heard)
        assert not {t.id for t in tracks} & set(heard)
        heard += [t.id for t in tracks]
    assert len(set(heard)) == 100


def test_the_same_seed_gives_the_same_picks_and_others_vary(picker: Picker) -> None:
    assert pick(picker, "happy") == pick(picker, "happy")
    others = {picker.pick(target_for("happy"), rng=random.Random(s)).tracks for s in range(5)}
    assert len(others) > 1


# --- genres ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "genre"),
    [
        ("k-pop", "k-pop"),
        ("kpop", "k-pop"),
        ("K Pop", "k-pop"),
        ("케이팝", "k-pop"),
        ("j-pop", "j-pop"),
        ("JPOP", "j-pop"),
        ("acoustic", "acoustic"),
        ("hip hop", "hip-hop"),
        ("Hip-Hop", "hip-hop"),
        ("R&B", "r-n-b"),
        ("rnb", "r-n-b"),
        ("재즈", "jazz"),
        ("rock n roll", "rock-n-roll"),
    ],
)
def test_genres_match_by_name_and_alias(picker: Picker, asked: str, genre: str) -> None:
    assert picker.resolve_genre(asked) == genre


def test_unknown_genre_names_the_closest_known_ones(picker: Picker) -> None:
    with pytest.raises(UnknownGenre) as caught:
        picker.resolve_genre("kpopp")
    assert caught.value.closest == ("k-pop", "pop", "j-pop")
    assert (
        str(caught.value) == "No such genre in the catalogue: 'kpopp' (closest: k-pop, pop, j-pop)"
    )
    with pytest.raises(UnknownGenre) as nothing_close:
        picker.resolve_genre("zzzzqqq")
    assert nothing_close.value.closest == ()


def test_the_genre_filter_holds(picker: Picker) -> None:
    for mood in ("happy", "sad", "angry"):
        for genre in ("k-pop", "j-pop", "acoustic"):
            tracks = pick(picker, mood, genre=genre)
            assert len(tracks) == 5 and all(genre in t.genres for t in tracks)


def test_a_genre_too_small_near_the_target_widens_and_says_so(picker: Picker) -> None:
    # Classical music is rarely loud and sour: few of its tracks sit in angry's region.
    result = picker.pick(target_for("angry"), genre="classical", rng=random.Random(1))
    assert result.widened and len(result.tracks) == 5
    assert all("classical" in t.genres for t in result.tracks)
    assert any(
        abs(t.valence - 0.25) > HALF_WIDTH or abs(t.energy - 0.85) > HALF_WIDTH
        for t in result.tracks
    )
    assert not picker.pick(target_for("sad"), genre="classical").widened


def test_sleep_and_comedy_only_when_asked_for(picker: Picker) -> None:
    for mood in ("calm", "sad", "neutral"):
        tracks = pick(picker, mood, count=10)
        assert not any(set(t.genres) <= {"sleep", "comedy"} for t in tracks)
    assert all("sleep" in t.genres for t in pick(picker, "calm", genre="sleep"))


# --- on a small catalogue made here ----------------------------------------------------------


def test_popularity_is_a_mild_prior() -> None:
    catalogue = make_catalogue(
        [
            row(1, valence=0.50, energy=0.50, popularity=0),
            row(2, valence=0.51, energy=0.50, popularity=100),  # 0.01 further, far more known
            row(3, valence=0.60, energy=0.50, popularity=100),  # 0.1 further: too far
        ]
    )
    picker = Picker(catalogue)
    for seed in range(10):
        result = picker.pick(Target(0.5, 0.5), count=3, rng=random.Random(seed))
        ids = [t.id for t in result.tracks]
        assert ids[2] == track_id(3)
    first = {
        picker.pick(Target(0.5, 0.5), count=1, rng=random.Random(s)).tracks[0].id for s in range(30)
    }
    assert first <= {track_id(1), track_id(2)}


def test_explicit_filter_on_a_small_catalogue() -> None:
    catalogue = make_catalogue(
        [row(1, explicit="True", valence=0.5), row(2, valence=0.9, energy=0.9)]
    )
    picker = Picker(catalogue)
    assert [t.id for t in picker.pick(Target(0.5, 0.5), count=2).tracks] == [track_id(2)]
    both = picker.pick(Target(0.5, 0.5), count=2, allow_explicit=True).tracks
    assert [t.id for t in both] == [track_id(1), track_id(2)]


def test_count_is_checked() -> None:
    picker = Picker(make_catalogue([row(1)]))
    for count in (0, 11):
        with pytest.raises(ValueError, match=re.escape(str(count))):
            picker.pick(Target(0.5, 0.5), count=count)
