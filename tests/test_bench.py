"""`moodbot bench`: a smoke run of every measurement (numbers are not checked: tests never time)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.bench import (
    SMOKE,
    TARGETS,
    chat_photo,
    cold_start_s,
    face_photos,
    music_bench,
    percentiles,
    run_bench,
    summary,
)
from ml.engine import EmotionEngine


def test_percentiles_use_the_nearest_rank() -> None:
    samples = [float(v) for v in range(1, 101)]
    assert percentiles(samples) == {"p50": 50.5, "p95": 95.0, "n": 100}
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "n": 1}


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (4000, 3000)])
def test_chat_photos_are_jpegs_of_the_asked_size(size: tuple[int, int]) -> None:
    for source in face_photos():
        image = Image.open(io.BytesIO(chat_photo(source, size)))
        assert (image.format, image.size) == ("JPEG", size)


def test_smoke_run_reports_every_key_and_finds_the_faces(engine: EmotionEngine) -> None:
    result = run_bench(engine, SMOKE, progress=lambda _: None)

    for key in ("latency_ms", "baseline_latency_ms", "throughput", "loop_lag_p99_ms", "rss_mb"):
        assert key in result
    assert "cold_start_s" in result  # None: the smoke plan skips the second process
    assert result["latency_ms"]["640x480"]["n"] == SMOKE.repeats
    assert result["model_ms_per_face"]["n"] == SMOKE.model_repeats
    assert 0 < result["model_ms_per_face"]["p50"] < result["latency_ms"]["640x480"]["p50"]
    assert result["targets"]["model ms a face p50"]["met"] is not None
    assert result["baseline_latency_ms"]["640x480"]["p50"] > 0
    assert 100 < result["baseline_rss_mb"] < 24_000  # measured in the baseline's own process
    assert set(result["throughput"]) == {"1", "4"}
    assert all(level["failed"] == 0 for level in result["throughput"].values())
    assert 100 < result["rss_mb"] < 24_000
    assert set(result["targets"]) == {target.name for target in TARGETS}
    # Sizes the smoke plan skips are reported as not measured, never as met.
    assert result["targets"]["4000x3000 p50 ms"]["met"] is None
    assert "640x480" in summary(result)
    assert "the model alone: p50" in summary(result)
    assert result["music"]["recommend_ms"]["n"] == SMOKE.music_repeats
    assert "music: recommendation p50" in summary(result)


def test_music_bench_measures_the_shipped_catalogue() -> None:
    music = music_bench(20)
    assert music["recommend_ms"]["n"] == 20 and music["recommend_ms"]["p50"] > 0
    assert music["catalogue_tracks"] > 85_000
    assert 0 < music["catalogue_load_s"] < 60 and 0 < music["catalogue_rss_mb"] < 1000


def test_target_checks_compare_in_the_right_direction() -> None:
    result = {"latency_ms": {"1280x960": {"p50": 120.0, "p95": 400.0}}}
    checks = {t.name: t.check(result) for t in TARGETS}
    assert checks["1280x960 p50 ms"]["met"] is True
    assert checks["1280x960 p95 ms"]["met"] is False
    fast = {"throughput": {"16": {"selfies_per_s": 9.0, "failed": 0}}}
    assert next(t for t in TARGETS if t.at_least).name.endswith("speed-up vs seed")
    assert {t.name: t.check(fast) for t in TARGETS}["selfies/s at 16 senders"]["met"] is True


def test_cold_start_times_a_new_moodbot_process(astronaut_jpeg: bytes) -> None:
    seconds = cold_start_s(astronaut_jpeg, "moodnet")
    assert 0 < seconds < 300


def test_cold_start_reports_a_failing_process() -> None:
    with pytest.raises(RuntimeError, match="cold-start run"):
        cold_start_s(b"not an image", "moodnet")
