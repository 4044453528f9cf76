"""Moods as places in valence x energy, and the music modes as moves between places.

Valence is how pleasant a song sounds, energy how intense and active (both 0..1, Spotify's own
audio features, which the catalogue keeps). Russell's circumplex of affect puts every emotion
on the same two axes (pleasure and arousal), so an emotion read from a face can name a region
of songs directly. This table is the one place the numbers live; docs/MUSIC.md explains it and
a test checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ml.labels import MODES

HALF_WIDTH = 0.1  # a place is its centre +- this on both axes


@dataclass(frozen=True)
class Place:
    """Where a mood's music sits: the centre of its region, and why it sits there."""

    valence: float
    energy: float
    why: str

    def around(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The region: (valence low, high), (energy low, high), clipped to 0..1."""
        return _span(self.valence), _span(self.energy)


def _span(centre: float) -> tuple[float, float]:
    return round(max(0.0, centre - HALF_WIDTH), 2), round(min(1.0, centre + HALF_WIDTH), 2)


PLACES: dict[str, Place] = {
    "happy": Place(0.80, 0.70, "pleasant and aroused: bright, upbeat songs"),
    "surprise": Place(0.65, 0.80, "most aroused of the pleasant moods: lively, eventful songs"),
    "angry": Place(0.25, 0.85, "unpleasant and most aroused: loud, driving songs"),
    "fear": Place(0.20, 0.65, "unpleasant and aroused, tense rather than loud"),
    "anxious": Place(0.35, 0.55, "uneasy and restless: mid energy, below-middle valence"),
    "disgust": Place(0.20, 0.50, "unpleasant, moderately aroused: sour, brooding songs"),
    "sad": Place(0.30, 0.30, "unpleasant and low in arousal: gentle, slow songs"),
    "hurt": Place(0.25, 0.40, "sad with an edge of tension: tender, aching songs"),
    "embarrassed": Place(
        0.50, 0.55, "flustered: a little aroused, neither pleasant nor unpleasant"
    ),
    "neutral": Place(0.50, 0.45, "the middle of both axes: even, unhurried songs"),
    # Not an emotion read from faces: where the calm mode heads.
    "calm": Place(0.60, 0.25, "pleasant and low in arousal: soft, relaxed songs"),
}


# lift: a step up in valence a person would accept (grief to hopeful, not to party music),
# with energy drawn a little towards a moderate, steady level.
LIFT_STEP = 0.25
LIFT_MAX_VALENCE = 0.85
LIFT_ENERGY_PULL = 0.3  # the share of the way energy moves towards LIFT_ENERGY
LIFT_ENERGY = 0.6
# calm: energy down a step (never below CALM_MIN_ENERGY), valence halfway towards calm's.
CALM_STEP = 0.3
CALM_MIN_ENERGY = 0.2
CALM_VALENCE_PULL = 0.5


class UnknownMood(ValueError):
    """Unknown mood"""


@dataclass(frozen=True)
class Target:
    """The point in valence x energy the picker aims at."""

    valence: float
    energy: float

    def around(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return _span(self.valence), _span(self.energy)


def place_of(mood: str) -> Place:
    try:
        return PLACES[mood]
    except KeyError:
        raise UnknownMood(f"{UnknownMood.__doc__}: {mood!r}") from None


def target_for(mood: str, mode: str = "match") -> Target:
    """Where the music for `mood` should sit in `mode`."""
    place = place_of(mood)
    valence, energy = place.valence, place.energy
    if mode == "match":
        pass
    elif mode == "lift":
        valence = max(valence, min(valence + LIFT_STEP, LIFT_MAX_VALENCE))
        energy += LIFT_ENERGY_PULL * (LIFT_ENERGY - energy)
    elif mode == "calm":
        valence += CALM_VALENCE_PULL * (PLACES["calm"].valence - valence)
        energy = min(energy, max(energy - CALM_STEP, CALM_MIN_ENERGY))
    else:
        raise ValueError(f"Unknown music mode: {mode!r} (known: {', '.join(MODES)})")
    return Target(round(valence, 3), round(energy, 3))


def blend(targets: Iterable[tuple[Target, float]]) -> Target:
    """The weighted mean of several targets (weights > 0: confidence x recency)."""
    pairs = [(t, max(w, 1e-6)) for t, w in targets]
    if not pairs:
        raise ValueError("blend needs at least one target")
    total = sum(w for _, w in pairs)
    valence = sum(t.valence * w for t, w in pairs) / total
    energy = sum(t.energy * w for t, w in pairs) / total
    return Target(round(valence, 3), round(energy, 3))


# Lift and calm move towards brighter or calmer music: they are described by these places only,
# so that calming anger never reads "restless, uneasy songs".
SETTLED_MOODS: tuple[str, ...] = ("happy", "surprise", "embarrassed", "neutral", "calm")


def nearest_mood(target: Target, among: Iterable[str] = tuple(PLACES)) -> str:
    """The mood (of `among`) whose place is closest to `target`."""
    return min(
        among,
        key=lambda m: (
            (PLACES[m].valence - target.valence) ** 2 + (PLACES[m].energy - target.energy) ** 2
        ),
    )


def describing_mood(emotion: str, mode: str, target: Target, *, blended: bool = False) -> str:
    """The mood whose sound words describe `target`: the emotion's own in match mode, the
    nearest settled place for a lift or a calm, the nearest of all for a group's blend."""
    if blended:
        return nearest_mood(target)
    if mode == "match":
        return emotion
    return nearest_mood(target, SETTLED_MOODS)


def recency_weight(age_hours: float, half_life_hours: float = 6.0) -> float:
    """1 for a mood read now, 1/2 for one half_life_hours old, and so on."""
    return 0.5 ** (max(age_hours, 0.0) / half_life_hours)
