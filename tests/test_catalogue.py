"""The shipped music catalogue: how it is built, that it loads, and that damage is caught."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bot.catalogue import DEFAULT_PATH, TRACK_URL, Catalogue, CatalogueError
from tests.fakes.catalogue import csv_text, make_catalogue, row, track_id

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- building ----------------------------------------------------------------------------------


def test_one_track_per_id_with_all_its_genres_and_its_best_popularity() -> None:
    catalogue = make_catalogue(
        [
            row(1, track_genre="acoustic", popularity=60),
            row(1, track_genre="j-pop", popularity=61),
            row(1, track_genre="acoustic", popularity=59),  # listed twice in one genre
            row(2, track_genre="jazz", artists="Ann;Bob", track_name=" Réveil 夜 "),
        ]
    )

    assert len(catalogue) == 2
    assert catalogue.genre_names == ("acoustic", "j-pop", "jazz")
    first, second = catalogue.track(0), catalogue.track(1)
    assert (first.id, first.genres, first.popularity) == (track_id(1), ("acoustic", "j-pop"), 61)
    assert (second.title, second.artists, second.genres) == ("Réveil 夜", ("Ann", "Bob"), ("jazz",))
    assert second.url == TRACK_URL + track_id(2)


def test_rows_that_are_not_songs_are_left_out() -> None:
    catalogue = make_catalogue(
        [
            row(1),
            row(2, track_name="", artists=""),  # the dataset has one such row
            row(3, speechiness=0.9),  # stand-up comedy, audio books
            row(4, track_id="short"),
        ]
    )
    assert [catalogue.track(i).id for i in range(len(catalogue))] == [track_id(1)]


def test_film_songs_are_taken_out_of_k_pop() -> None:
    catalogue = make_catalogue(
        [
            row(1, artists="BTS", track_genre="k-pop"),
            row(2, artists="Film Composer;Singer", track_genre="k-pop"),
            row(3, artists="Film Composer", track_genre="indian"),
            row(4, artists="Crossover", track_genre="k-pop"),
            row(4, artists="Crossover", track_genre="pop-film"),
        ]
    )
    genres = {catalogue.track(i).id: catalogue.track(i).genres for i in range(len(catalogue))}
    assert genres == {
        track_id(1): ("k-pop",),
        track_id(3): ("indian",),
        track_id(4): ("pop-film",),
    }  # track 2 was in k-pop only: it is gone


def test_numbers_and_flags_are_kept(tmp_path: Path) -> None:
    catalogue = make_catalogue([row(1, valence=0.123, energy=0.987, explicit="True", tempo=91.5)])
    catalogue.save(tmp_path / "c.npz")
    track = Catalogue.load(tmp_path / "c.npz").track(0)
    assert (track.valence, track.energy, track.explicit, track.tempo) == (0.123, 0.987, True, 91.5)


def test_indices_of_finds_known_ids_and_skips_the_rest() -> None:
    catalogue = make_catalogue([row(n) for n in (5, 1, 3)])
    found = catalogue.indices_of([track_id(3), "unknown", track_id(5), "ÿ" * 22, ""])
    assert [catalogue.track(int(i)).id for i in found] == [track_id(3), track_id(5)]
    assert catalogue.indices_of([]).tolist() == []


def test_build_script_writes_a_catalogue(tmp_path: Path) -> None:
    source = tmp_path / "tracks.csv"
    source.write_text(csv_text([row(1), row(2, track_genre="k-pop")]), encoding="utf-8")
    out = tmp_path / "out" / "catalogue.npz"
    result = subprocess.run(
        [sys.executable, "scripts/build_catalogue.py", str(source), "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "2 tracks, 2 genres, 0 explicit" in result.stdout
    assert len(Catalogue.load(out)) == 2


# --- the shipped file --------------------------------------------------------------------------


def test_the_shipped_catalogue_is_small_and_complete() -> None:
    assert DEFAULT_PATH.stat().st_size <= 10 * 1024 * 1024
    catalogue = Catalogue.load()
    assert 85_000 < len(catalogue) < 89_741  # 89,741 distinct ids, less speech and film k-pop
    assert len(catalogue.genre_names) == 114
    assert {"k-pop", "j-pop", "acoustic", "hip-hop", "classical"} <= set(catalogue.genre_names)
    sizes = dict(zip(catalogue.genre_names, map(len, catalogue.genre_members), strict=True))
    # Each genre had 1,000 rows; comedy lost its spoken tracks, k-pop its film songs.
    assert sizes["comedy"] < 300 and 500 < sizes["k-pop"] < 600
    assert min(n for g, n in sizes.items() if g not in ("comedy", "k-pop")) > 900


# --- damage ------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "catalogue.npz"
    make_catalogue([row(n, valence=n / 10) for n in range(1, 6)]).save(path)
    return path


def resave(path: Path, **changes: np.ndarray | None) -> None:
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    np.savez_compressed(path, **arrays)


def test_a_missing_catalogue_is_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError) as caught:
        Catalogue.load(tmp_path / "nowhere.npz")
    assert str(caught.value) == (
        f"Music catalogue {tmp_path / 'nowhere.npz'} is missing "
        "(build it with scripts/build_catalogue.py)"
    )


def test_a_truncated_file_is_damaged(saved: Path) -> None:
    saved.write_bytes(saved.read_bytes()[:300])
    with pytest.raises(CatalogueError, match=f"Music catalogue {saved} is damaged"):
        Catalogue.load(saved)


def test_a_file_that_is_not_an_archive_is_damaged(saved: Path) -> None:
    saved.write_bytes(b"\x89PNG\r\n\x1a\n not a catalogue at all")
    with pytest.raises(CatalogueError, match="is damaged"):
        Catalogue.load(saved)


def test_a_zip_with_a_bad_member_is_damaged(saved: Path) -> None:
    with zipfile.ZipFile(saved, "w") as archive:
        archive.writestr("ids.npy", b"garbage")
    with pytest.raises(CatalogueError, match="is damaged"):
        Catalogue.load(saved)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"valence": None}, "missing valence"),
        ({"format": np.array([99], dtype=np.uint16)}, "format"),
        ({"valence": np.array([0.1, 0.2, np.nan, 0.4, 0.5], dtype=np.float32)}, "valence"),
        ({"energy": np.full(5, 1.5, dtype=np.float32)}, "energy outside 0..1"),
        ({"energy": np.full(4, 0.5, dtype=np.float32)}, "energy must be 5 values"),
        ({"popularity": np.full(5, 200, dtype=np.uint8)}, "popularity above 100"),
        ({"title_offsets": np.array([0, 1, 2], dtype=np.uint32)}, "title_offsets"),
        ({"genre_ids": np.full(5, 9, dtype=np.uint8)}, "genre_ids"),
        ({"ids": np.array([b"B" * 22, b"A" * 22] * 2 + [b"C" * 22])}, "not sorted"),
    ],
)
def test_damaged_arrays_are_named(saved: Path, changes: dict, reason: str) -> None:
    resave(saved, **changes)
    with pytest.raises(CatalogueError, match=f"catalogue {saved} is damaged: .*{reason}"):
        Catalogue.load(saved)


def test_damaged_catalogue_stops_start_up_with_one_line(saved: Path, tmp_path: Path) -> None:
    saved.write_bytes(b"damaged")
    env = {"MOODBOT_CATALOGUE": str(saved), "MOODBOT_DB": str(tmp_path / "m.db")}
    for command in (["run"], ["music", "sad"]):
        result = subprocess.run(
            [sys.executable, "-m", "bot.cli", *command],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), **env},
            input="",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines == [
            f"moodbot: Music catalogue {saved} is damaged: {lines[0].split(': ', 2)[2]}"
        ]
        assert "Traceback" not in result.stderr
