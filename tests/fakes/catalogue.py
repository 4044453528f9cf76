"""Small catalogues made in the tests: dataset CSV rows written the way the real file has them."""

from __future__ import annotations

import csv
import io
from typing import Any

from bot.catalogue import Catalogue, build, clean_genres, read_dataset

# The dataset's columns, in its order.
COLUMNS = (
    *("track_id", "artists", "album_name", "track_name", "popularity", "duration_ms"),
    *("explicit", "danceability", "energy", "key", "loudness", "mode", "speechiness"),
    *("acousticness", "instrumentalness", "liveness", "valence", "tempo", "time_signature"),
    "track_genre",
)


def track_id(n: int) -> str:
    """A 22-character base-62 id, unique per n."""
    return f"T{n:021d}"


def row(n: int, **fields: Any) -> dict[str, Any]:
    """Dataset row number n; every field can be overridden."""
    defaults = {
        "track_id": track_id(n),
        "artists": f"Artist {n}",
        "album_name": f"Album {n}",
        "track_name": f"Song {n}",
        "popularity": 50,
        "duration_ms": 200_000,
        "explicit": "False",
        "danceability": 0.5,
        "energy": 0.5,
        "key": 0,
        "loudness": -6.0,
        "mode": 1,
        "speechiness": 0.05,
        "acousticness": 0.3,
        "instrumentalness": 0.0,
        "liveness": 0.1,
        "valence": 0.5,
        "tempo": 120.0,
        "time_signature": 4,
        "track_genre": "pop",
    }
    return {**defaults, **fields}


def csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\r\n")  # CRLF, as the dataset
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def make_catalogue(rows: list[dict[str, Any]]) -> Catalogue:
    tracks = read_dataset(io.StringIO(csv_text(rows), newline=""))
    clean_genres(tracks)
    return build(tracks)
