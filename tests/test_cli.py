"""`moodbot analyze` and `moodbot run` as a user runs them: the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MOODBOT = str(Path(sys.executable).with_name("moodbot"))
TRACK_URL = "https://open.spotify.com/track/"


def moodbot(*args: str, cwd: Path, stdin: str = "", **env: str) -> subprocess.CompletedProcess:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("MOODBOT_", "SPOTIFY_"))
    }
    environment.update({"MOODBOT_DB": str(cwd / "moods.db"), **env})
    return subprocess.run(
        [MOODBOT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=240,
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut_jpeg: bytes, no_face_png: bytes, group_photo: bytes):
    folder = tmp_path_factory.mktemp("photos")
    files = {
        "smile.jpg": astronaut_jpeg,
        "wall.png": no_face_png,
        "group.jpg": group_photo,
        "notes.jpg": b"shopping list: milk, eggs\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def analyzed(photos: Path) -> tuple[int, list[dict], str]:
    """One run over every kind of input, shared by the contract tests below."""
    names = ["smile.jpg", "wall.png", "group.jpg", "notes.jpg", "missing.jpg"]
    result = moodbot("analyze", "--json", *names, cwd=photos)
    return (
        result.returncode,
        [json.loads(line) for line in result.stdout.splitlines()],
        result.stderr,
    )


def test_json_has_one_object_per_input_in_order(analyzed) -> None:
    _, results, _ = analyzed
    assert [r["path"] for r in results] == [
        "smile.jpg",
        "wall.png",
        "group.jpg",
        "notes.jpg",
        "missing.jpg",
    ]
    for result in results:
        assert set(result) == {
            "path",
            "ok",
            "emotion",
            "confidence",
            "faces",
            "recommendations",
            "error",
        }


def test_json_describes_a_face(analyzed) -> None:
    smile = analyzed[1][0]
    assert (smile["ok"], smile["emotion"], smile["error"]) == (True, "happy", None)
    (face,) = smile["faces"]
    assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
    assert face["emotion"] == "happy" and face["confidence"] == smile["confidence"]
    assert abs(sum(face["scores"].values()) - 1) < 1e-3
    # No Spotify credentials: five catalogue tracks, in the happy place.
    tracks = smile["recommendations"]
    assert len(tracks) == 5
    for track in tracks:
        assert set(track) == {"title", "artists", "url", "kind", "genre", "valence", "energy"}
        assert track["kind"] == "track" and track["url"].startswith(TRACK_URL)
        assert 0.7 <= track["valence"] <= 0.9 and 0.6 <= track["energy"] <= 0.8


def test_json_group_photo_has_every_face(analyzed) -> None:
    group = analyzed[1][2]
    assert len(group["faces"]) == 2 and group["emotion"] == group["faces"][0]["emotion"]


def test_json_errors_have_codes(analyzed) -> None:
    _, results, stderr = analyzed
    codes = {r["path"]: (r["ok"], r["error"]["code"]) for r in results if r["error"]}
    assert codes == {
        "wall.png": (False, "no_face"),
        "notes.jpg": (False, "unreadable"),
        "missing.jpg": (False, "unreadable"),
    }
    assert "missing.jpg does not exist" in results[4]["error"]["message"]
    assert "Traceback" not in stderr


def test_exit_status_two_when_any_input_is_unreadable(analyzed) -> None:
    assert analyzed[0] == 2


def test_exit_status_three_for_no_face_and_zero_for_faces(photos: Path) -> None:
    assert moodbot("analyze", "smile.jpg", "wall.png", cwd=photos).returncode == 3
    result = moodbot("analyze", "smile.jpg", cwd=photos)
    assert result.returncode == 0
    assert result.stdout.startswith("smile.jpg: happy ")
    assert TRACK_URL in result.stdout


def test_too_large_file_is_refused_by_size(photos: Path) -> None:
    result = moodbot("analyze", "--json", "smile.jpg", cwd=photos, MOODBOT_MAX_IMAGE_BYTES="1000")
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["code"] == "too_large"


def test_bad_settings_are_reported_without_a_traceback(photos: Path) -> None:
    result = moodbot("analyze", "smile.jpg", cwd=photos, MOODBOT_QUEUE_SIZE="lots")
    assert result.returncode == 2
    assert "MOODBOT_QUEUE_SIZE" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_bundle_is_a_clear_error(photos: Path) -> None:
    result = moodbot("analyze", "smile.jpg", "--model", str(photos / "no-model"), cwd=photos)
    assert result.returncode == 1
    assert "no-model" in result.stderr and "Traceback" not in result.stderr


def test_console_chat_through_a_pipe(photos: Path, tmp_path: Path) -> None:
    script = "\n".join(
        ["/help", "smile.jpg", "wall.png", "notes.jpg", "/history", "/group", "/nope", "/quit"]
    )
    result = moodbot("run", cwd=photos, stdin=script + "\n", MOODBOT_DB=str(tmp_path / "a.db"))
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "Send me a selfie" in out
    assert "You look happy 😄" in out and "🎵 happy → bright, upbeat songs: valence 0.7-0.9" in out
    assert out.count(TRACK_URL) == 5 + 5  # the selfie and the group mix
    assert "can't recognize a face" in out
    assert "couldn't read that file" in out
    assert "Your last 1 moods:" in out
    assert (photos / "moodbot-history.png").read_bytes().startswith(b"\x89PNG")
    assert "Group mix for 1 person: happy 😄 100%." in out
    assert "I don't know that command" in out
    assert "Traceback" not in result.stderr


def test_console_forget_removes_the_history(photos: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "b.db")
    result = moodbot("run", cwd=photos, stdin="smile.jpg\n/forget\n/history\n", MOODBOT_DB=db)
    assert "Done: I deleted" in result.stdout
    assert result.stdout.rstrip().endswith("No moods yet. Send me a selfie!")


# --- moodbot music ---------------------------------------------------------------------------


def test_music_json_contract(tmp_path: Path) -> None:
    result = moodbot("music", "슬픔", "--genre", "제이팝", "--count", "3", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tracks = json.loads(result.stdout)
    assert len(tracks) == 3
    for track in tracks:
        assert set(track) == {"title", "artists", "url", "kind", "genre", "valence", "energy"}
        assert (track["kind"], track["genre"]) == ("track", "j-pop")
        assert track["title"] and track["artists"] and all(track["artists"])
        assert track["url"].startswith(TRACK_URL) and len(track["url"]) == len(TRACK_URL) + 22
        assert 0.2 <= track["valence"] <= 0.4 and 0.2 <= track["energy"] <= 0.4
    assert len({t["artists"][0] for t in tracks}) == 3


def test_music_modes_move_the_numbers(tmp_path: Path) -> None:
    def mean_of(mode: str, key: str) -> float:
        result = moodbot("music", "angry", "--mode", mode, "--json", cwd=tmp_path)
        tracks = json.loads(result.stdout)
        return sum(t[key] for t in tracks) / len(tracks)

    assert mean_of("lift", "valence") >= mean_of("match", "valence") + 0.2
    assert mean_of("calm", "energy") <= mean_of("match", "energy") - 0.2


def test_music_for_people_is_one_line_per_track(tmp_path: Path) -> None:
    result = moodbot("music", "happy", cwd=tmp_path)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == 5
    assert all(" — " in line and TRACK_URL in line and "valence 0." in line for line in lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sadd",), "moodbot: Unknown emotion: 'sadd' (known: happy, sad,"),
        (("sad", "--genre", "kpopp"), "moodbot: No such genre in the catalogue: 'kpopp' (closest"),
        (("sad", "--mode", "party"), "moodbot: Unknown music mode: 'party'"),
        (("sad", "--count", "11"), "moodbot: count must be between 1 and 10, got 11"),
    ],
)
def test_music_refuses_bad_input_in_one_line(tmp_path: Path, args, message) -> None:
    result = moodbot("music", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == ""
