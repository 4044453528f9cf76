"""The music catalogue that ships with moodbot: Spotify tracks with how they sound.

Built once from the "Spotify Tracks Dataset" (M. Pandya, 2022; see NOTICE) by
`scripts/build_catalogue.py`, stored as one compressed NumPy archive (`bot/catalogue.npz`)
and loaded once at start-up. Only what the picker needs is kept: the Spotify id, title,
artists, genres, valence, energy, acousticness, tempo, popularity and the explicit flag.

Text is kept as UTF-8 byte blobs with offsets and decoded only for the few tracks a reply
shows: 90k Python strings would cost more memory than the whole catalogue.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
DEFAULT_PATH = Path(__file__).with_name("catalogue.npz")
TRACK_URL = "https://open.spotify.com/track/"
ID_CHARS = 22  # Spotify ids are 22 base-62 characters
ARTIST_SEPARATOR = ";"  # as in the dataset

# Tracks that are mostly speech (Spotify's own rule of thumb: speechiness above 0.66 is
# "probably made entirely of spoken words") are stand-up comedy and audio books, not songs.
MAX_SPEECHINESS = 0.66

# Genre labels in the dataset are noisy: its k-pop holds hundreds of Indian film songs. A track
# stays out of a genre here when it, or any of its artists, is also listed under one of these.
NOT_IN_GENRE: dict[str, frozenset[str]] = {"k-pop": frozenset({"indian", "pop-film"})}

# (name, dtype) of every array in the file; the loader checks each one.
_NUMERIC = {
    "valence": np.float32,
    "energy": np.float32,
    "acousticness": np.float32,
    "tempo": np.float32,
    "popularity": np.uint8,
    "explicit": np.bool_,
}
_OFFSETS = ("title_offsets", "artist_offsets", "genre_offsets")
_KEYS = frozenset(
    {"format", "ids", "titles", "artists", "genre_names", "genre_ids", *_NUMERIC, *_OFFSETS}
)


class CatalogueError(Exception):
    """The music catalogue cannot be used"""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"Music catalogue {path} {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class Track:
    """One catalogue track, as a reply shows it."""

    id: str
    title: str
    artists: tuple[str, ...]
    genres: tuple[str, ...]
    valence: float
    energy: float
    acousticness: float
    tempo: float
    popularity: int
    explicit: bool

    @property
    def url(self) -> str:
        return TRACK_URL + self.id


class Catalogue:
    """Column arrays over every track, sorted by Spotify id (so an id lookup is a bisection)."""

    def __init__(self, arrays: dict[str, np.ndarray], path: str | Path = "<memory>") -> None:
        _validate(arrays, path)
        self.path = Path(path)
        self._arrays = arrays
        self.ids: np.ndarray = arrays["ids"]
        self.valence: np.ndarray = arrays["valence"]
        self.energy: np.ndarray = arrays["energy"]
        self.acousticness: np.ndarray = arrays["acousticness"]
        self.tempo: np.ndarray = arrays["tempo"]
        self.popularity: np.ndarray = arrays["popularity"]
        self.explicit: np.ndarray = arrays["explicit"]
        self.genre_names: tuple[str, ...] = tuple(g.decode() for g in arrays["genre_names"])
        self._titles, self._title_offsets = arrays["titles"], arrays["title_offsets"]
        self._artists, self._artist_offsets = arrays["artists"], arrays["artist_offsets"]
        self._genre_ids, self._genre_offsets = arrays["genre_ids"], arrays["genre_offsets"]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> Catalogue:
        """Read and check a catalogue file; CatalogueError names the file when it cannot."""
        path = Path(path)
        if not path.is_file():
            raise CatalogueError(path, "is missing (build it with scripts/build_catalogue.py)")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise CatalogueError(path, f"is damaged: {exc}") from None
        return cls(arrays, path)

    def save(self, path: str | Path) -> None:
        """Write the catalogue as one compressed archive."""
        np.savez_compressed(path, **self._arrays)

    # --- one track ----------------------------------------------------------------------------

    def track(self, index: int) -> Track:
        """The track at `index`, with its text decoded."""
        return Track(
            id=self.ids[index].decode("ascii"),
            title=self.title(index),
            artists=self.artists(index),
            genres=self.genres(index),
            valence=round(float(self.valence[index]), 3),
            energy=round(float(self.energy[index]), 3),
            acousticness=round(float(self.acousticness[index]), 3),
            tempo=round(float(self.tempo[index]), 1),
            popularity=int(self.popularity[index]),
            explicit=bool(self.explicit[index]),
        )

    def title(self, index: int) -> str:
        return _text(self._titles, self._title_offsets, index)

    def artists(self, index: int) -> tuple[str, ...]:
        return tuple(_text(self._artists, self._artist_offsets, index).split(ARTIST_SEPARATOR))

    def genres(self, index: int) -> tuple[str, ...]:
        start, end = self._genre_offsets[index], self._genre_offsets[index + 1]
        return tuple(self.genre_names[g] for g in self._genre_ids[start:end])

    def indices_of(self, track_ids: Iterable[str]) -> np.ndarray:
        """Catalogue indices of the given Spotify ids; ids not in the catalogue are skipped."""
        wanted = np.array([t.encode("ascii", "replace") for t in track_ids], dtype=self.ids.dtype)
        if not len(wanted):
            return np.zeros(0, dtype=np.intp)
        found = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        return found[self.ids[found] == wanted]

    # --- genres -------------------------------------------------------------------------------

    @cached_property
    def genre_members(self) -> tuple[np.ndarray, ...]:
        """For each genre (in `genre_names` order), the sorted indices of its tracks."""
        owners = np.repeat(np.arange(len(self), dtype=np.uint32), np.diff(self._genre_offsets))
        order = np.argsort(self._genre_ids, kind="stable")
        bounds = np.searchsorted(self._genre_ids[order], np.arange(len(self.genre_names) + 1))
        return tuple(owners[order[a:b]] for a, b in itertools.pairwise(bounds))


def _text(blob: np.ndarray, offsets: np.ndarray, index: int) -> str:
    return blob[offsets[index] : offsets[index + 1]].tobytes().decode("utf-8")


def _validate(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Check shapes, types and ranges, so that a damaged file fails at start-up, not in a reply."""

    def bad(reason: str) -> CatalogueError:
        return CatalogueError(path, f"is damaged: {reason}")

    missing = _KEYS - arrays.keys()
    if missing:
        raise bad(f"missing {', '.join(sorted(missing))}")
    if arrays["format"].tolist() != [FORMAT_VERSION]:
        raise bad(f"format {arrays['format'].tolist()} is not {FORMAT_VERSION}")
    ids = arrays["ids"]
    if ids.dtype != np.dtype(f"S{ID_CHARS}") or ids.ndim != 1 or not len(ids):
        raise bad(f"ids must be a non-empty array of {ID_CHARS}-byte strings")
    if not np.all(ids[1:] > ids[:-1]):
        raise bad("ids are not sorted and unique")
    count = len(ids)
    for name, dtype in _NUMERIC.items():
        if arrays[name].dtype != dtype or arrays[name].shape != (count,):
            raise bad(f"{name} must be {count} values of {np.dtype(dtype).name}")
    for name in ("valence", "energy", "acousticness"):
        values = arrays[name]
        if not np.all((values >= 0) & (values <= 1)):  # also catches NaN
            raise bad(f"{name} outside 0..1")
    if arrays["popularity"].max() > 100:
        raise bad("popularity above 100")
    for name, blob in (("title", "titles"), ("artist", "artists"), ("genre", "genre_ids")):
        offsets = arrays[f"{name}_offsets"]
        if (
            offsets.shape != (count + 1,)
            or offsets.dtype.kind != "u"
            or offsets[0] != 0
            or offsets[-1] != len(arrays[blob])
            or np.any(np.diff(offsets.astype(np.int64)) < 0)
        ):
            raise bad(f"{name}_offsets do not fit {blob}")
    if arrays["titles"].dtype != np.uint8 or arrays["artists"].dtype != np.uint8:
        raise bad("titles and artists must be UTF-8 bytes")
    names = arrays["genre_names"]
    if names.dtype.kind != "S" or not len(names):
        raise bad("genre_names must be a non-empty array of byte strings")
    if arrays["genre_ids"].dtype != np.uint8 or (
        len(arrays["genre_ids"]) and arrays["genre_ids"].max() >= len(names)
    ):
        raise bad("genre_ids do not fit genre_names")


# --- building it from the dataset ------------------------------------------------------------


@dataclass
class _Row:
    title: str
    artists: str
    genres: list[str]
    numbers: dict[str, float]


def _number(row: dict[str, str], name: str) -> float:
    return float(row[name])


def read_dataset(lines: Iterable[str]) -> dict[str, _Row]:
    """One entry per distinct track id, with every genre it is listed under."""
    tracks: dict[str, _Row] = {}
    for row in csv.DictReader(lines):
        track_id, title, artists = row["track_id"], row["track_name"], row["artists"]
        if len(track_id) != ID_CHARS or not track_id.isalnum() or not title or not artists:
            continue  # the dataset has one row with neither title nor artists
        if _number(row, "speechiness") > MAX_SPEECHINESS:
            continue
        known = tracks.get(track_id)
        if known is not None:
            # A track listed under several genres: the rows differ only in popularity (by 1).
            if row["track_genre"] not in known.genres:
                known.genres.append(row["track_genre"])
            known.numbers["popularity"] = max(
                known.numbers["popularity"], _number(row, "popularity")
            )
            continue
        numbers = {name: _number(row, name) for name in _NUMERIC if name != "explicit"}
        numbers["explicit"] = float(row["explicit"] == "True")
        tracks[track_id] = _Row(title.strip(), artists.strip(), [row["track_genre"]], numbers)
    return tracks


def clean_genres(tracks: dict[str, _Row]) -> None:
    """Take tracks out of the genres NOT_IN_GENRE says they do not belong to (in place)."""
    for genre, others in NOT_IN_GENRE.items():
        foreign = {
            artist
            for row in tracks.values()
            if others.intersection(row.genres)
            for artist in row.artists.split(ARTIST_SEPARATOR)
        }
        for row in tracks.values():
            if genre in row.genres and (
                others.intersection(row.genres)
                or foreign.intersection(row.artists.split(ARTIST_SEPARATOR))
            ):
                row.genres.remove(genre)
    for track_id in [t for t, row in tracks.items() if not row.genres]:
        del tracks[track_id]


def _blob(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.uint32)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def build(tracks: dict[str, _Row]) -> Catalogue:
    """The catalogue of `tracks` (from `read_dataset`)."""
    if not tracks:
        raise ValueError("no tracks to build a catalogue from")
    ids = sorted(tracks)
    rows = [tracks[i] for i in ids]
    genre_names = sorted({g for row in rows for g in row.genres})
    if len(genre_names) > 255:
        raise ValueError(f"{len(genre_names)} genres do not fit in a byte")
    genre_index = {g: i for i, g in enumerate(genre_names)}
    titles, title_offsets = _blob([r.title for r in rows])
    artists, artist_offsets = _blob([r.artists for r in rows])
    genre_ids = np.array([genre_index[g] for r in rows for g in r.genres], dtype=np.uint8)
    genre_offsets = np.zeros(len(rows) + 1, dtype=np.uint32)
    genre_offsets[1:] = np.cumsum([len(r.genres) for r in rows])
    arrays = {
        "format": np.array([FORMAT_VERSION], dtype=np.uint16),
        "ids": np.array([i.encode("ascii") for i in ids], dtype=f"S{ID_CHARS}"),
        "titles": titles,
        "title_offsets": title_offsets,
        "artists": artists,
        "artist_offsets": artist_offsets,
        "genre_names": np.array([g.encode() for g in genre_names]),
        "genre_ids": genre_ids,
        "genre_offsets": genre_offsets,
        **{
            name: np.array([r.numbers[name] for r in rows]).astype(dtype)
            for name, dtype in _NUMERIC.items()
        },
    }
    return Catalogue(arrays)


def build_from_csv(source: str | Path) -> Catalogue:
    """Build from the dataset's CSV file (gzip'd or not)."""
    source = Path(source)
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        tracks = read_dataset(text)
    clean_genres(tracks)
    return build(tracks)
