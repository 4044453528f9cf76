"""Pick K catalogue tracks near a point in valence x energy: the heart of the music answer.

Nearest first, with a mild preference for popular tracks, one track per artist, explicit
tracks only when allowed, nothing the person heard recently, and a little randomness among
near-equals so that two people with the same mood do not always get the same five songs.
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bot.catalogue import Catalogue, Track
from bot.moodspace import HALF_WIDTH, Target

DEFAULT_COUNT = 5
MAX_COUNT = 10
# A track of popularity 100 counts as this much nearer than one of popularity 0: a quarter of
# a region's half-width, enough to prefer known songs among equals, never to leave the region.
POPULARITY_WEIGHT = 0.025
# Random extra distance in [0, JITTER): near-equal tracks trade places between replies.
JITTER = 0.03
SHORTLIST_PER_PICK = 30  # how many nearest candidates each wanted track may come from
# Genres whose tracks are not music for a mood (white noise for sleep, stand-up comedy): left
# out unless someone asks for them with /genre.
OFF_BY_DEFAULT_GENRES = frozenset({"sleep", "comedy"})

# What people type -> the catalogue's genre name. Spelling variants (kpop, K Pop, hip hop) are
# handled by `_key`; this table holds what spelling cannot find: other names and Korean.
GENRE_ALIASES: dict[str, str] = {
    "케이팝": "k-pop",
    "가요": "k-pop",
    "제이팝": "j-pop",
    "일본": "j-pop",
    "팝": "pop",
    "락": "rock",
    "록": "rock",
    "힙합": "hip-hop",
    "랩": "hip-hop",
    "rap": "hip-hop",
    "재즈": "jazz",
    "클래식": "classical",
    "어쿠스틱": "acoustic",
    "인디": "indie",
    "발라드": "romance",
    "ballad": "romance",
    "댄스": "dance",
    "알앤비": "r-n-b",
    "r&b": "r-n-b",
    "rnb": "r-n-b",
    "일렉트로닉": "electronic",
    "메탈": "metal",
    "포크": "folk",
    "컨트리": "country",
    "블루스": "blues",
    "소울": "soul",
    "펑크": "punk",
    "레게": "reggae",
    "애니": "anime",
    "애니메이션": "anime",
    "피아노": "piano",
    "lofi": "chill",
    "lo-fi": "chill",
    "c-pop": "mandopop",
    "cpop": "mandopop",
    "bollywood": "indian",
    "latin pop": "latin",
}


class UnknownGenre(ValueError):
    """No such genre in the catalogue"""

    def __init__(self, asked: str, closest: tuple[str, ...]) -> None:
        hint = f" (closest: {', '.join(closest)})" if closest else ""
        super().__init__(f"{self.__doc__}: {asked!r}{hint}")
        self.asked = asked
        self.closest = closest


@dataclass(frozen=True)
class Pick:
    """The tracks chosen, and whether the search had to leave the target's region."""

    tracks: tuple[Track, ...]
    target: Target
    genre: str | None
    widened: bool  # fewer than the wanted tracks (in the genre) lie inside the region


@dataclass(frozen=True)
class _Pool:
    """The tracks one kind of request chooses from, with their columns laid out contiguously."""

    indices: np.ndarray  # catalogue indices, sorted
    valence: np.ndarray
    energy: np.ndarray
    bonus: np.ndarray  # the popularity prior, as a distance

    @classmethod
    def of(cls, catalogue: Catalogue, indices: np.ndarray) -> _Pool:
        bonus = catalogue.popularity[indices].astype(np.float32) * np.float32(
            POPULARITY_WEIGHT / 100
        )
        return cls(indices, catalogue.valence[indices], catalogue.energy[indices], bonus)

    def positions_of(self, indices: np.ndarray) -> np.ndarray:
        """Where the given catalogue indices sit in this pool (those not in it are skipped)."""
        if not len(indices) or not len(self.indices):
            return np.zeros(0, dtype=np.intp)
        positions = np.minimum(np.searchsorted(self.indices, indices), len(self.indices) - 1)
        return np.unique(positions[self.indices[positions] == indices])


def _key(name: str) -> str:
    """Spelling-blind genre key: 'K-Pop', 'kpop', 'k pop' -> 'kpop'; 'R&B' -> 'rb'."""
    return re.sub(r"[\s\-_&'’.]+|\bn\b", "", name.strip().lower())


class Picker:
    """Chooses tracks from one catalogue; cheap to call (numpy over a few arrays)."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self._genres = {name: i for i, name in enumerate(catalogue.genre_names)}
        self._by_key = {_key(name): name for name in catalogue.genre_names}
        self._by_key.update(
            {_key(alias): name for alias, name in GENRE_ALIASES.items() if name in self._genres}
        )
        off = [self._genres[g] for g in OFF_BY_DEFAULT_GENRES if g in self._genres]
        everyone = np.ones(len(catalogue), dtype=bool)
        for g in off:
            everyone[catalogue.genre_members[g]] = False
        # Tracks only in off-by-default genres are left out; one also listed as pop stays.
        for g, members in enumerate(catalogue.genre_members):
            if g not in off:
                everyone[members] = True
        self._default_pool = np.flatnonzero(everyone)
        self._pools: dict[tuple[str | None, bool], _Pool] = {}

    # --- genres -------------------------------------------------------------------------------

    @property
    def genres(self) -> tuple[str, ...]:
        return self.catalogue.genre_names

    def resolve_genre(self, asked: str) -> str:
        """The catalogue genre for a name or alias; UnknownGenre with the closest ones if none."""
        words = " ".join(asked.split()).lower()
        found = self._by_key.get(_key(words)) or GENRE_ALIASES.get(words)
        if found in self._genres:
            return found
        keys = difflib.get_close_matches(_key(words), list(self._by_key), n=6, cutoff=0.5)
        closest = tuple(dict.fromkeys(self._by_key[k] for k in keys))[:3]
        raise UnknownGenre(asked, closest)

    # --- picking ------------------------------------------------------------------------------

    def pick(
        self,
        target: Target,
        *,
        count: int = DEFAULT_COUNT,
        genre: str | None = None,
        allow_explicit: bool = False,
        exclude_ids: Iterable[str] = (),
        rng: random.Random | None = None,
    ) -> Pick:
        """`count` tracks near `target`, by distinct artists; genre is a catalogue name."""
        if not 1 <= count <= MAX_COUNT:
            raise ValueError(f"count must be between 1 and {MAX_COUNT}, got {count!r}")
        pool = self._pool(genre, allow_explicit)
        dv = pool.valence - np.float32(target.valence)
        de = pool.energy - np.float32(target.energy)
        score = np.sqrt(dv * dv + de * de) - pool.bonus
        inside = (np.abs(dv) <= HALF_WIDTH) & (np.abs(de) <= HALF_WIDTH)
        heard = pool.positions_of(self.catalogue.indices_of(exclude_ids))
        score[heard], inside[heard] = np.inf, False
        available = len(pool.indices) - len(heard)
        size = min(available, SHORTLIST_PER_PICK * count)
        shortlist = np.argpartition(score, size - 1)[:size] if size else np.zeros(0, np.intp)
        # A little randomness among near-equals, from the caller's generator (tests seed it).
        noise = np.random.default_rng((rng or random.Random()).getrandbits(64)).random(size)
        ordered = pool.indices[shortlist[np.argsort(score[shortlist] + noise * JITTER)]]
        chosen = self._distinct_artists(ordered, count)
        tracks = tuple(self.catalogue.track(i) for i in chosen)
        return Pick(tracks, target, genre, widened=int(np.count_nonzero(inside)) < count)

    def _pool(self, genre: str | None, allow_explicit: bool) -> _Pool:
        key = (genre, allow_explicit)
        if key not in self._pools:
            if genre is None:
                indices = self._default_pool
            elif genre in self._genres:
                indices = self.catalogue.genre_members[self._genres[genre]].astype(np.intp)
            else:
                raise UnknownGenre(genre, ())
            if not allow_explicit:
                indices = indices[~self.catalogue.explicit[indices]]
            self._pools[key] = _Pool.of(self.catalogue, indices)
        return self._pools[key]

    def _distinct_artists(self, ordered: np.ndarray, count: int) -> list[int]:
        chosen: list[int] = []
        seen: set[str] = set()
        for index in ordered:
            lead = self.catalogue.artists(int(index))[0].casefold()
            if lead not in seen:
                seen.add(lead)
                chosen.append(int(index))
                if len(chosen) == count:
                    break
        return chosen
