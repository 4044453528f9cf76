"""`moodbot bench`: how fast the real engine answers, alone and under load, in one process run.

Everything is measured on real face photos (scikit-image's astronaut, shipped in bot/photos/,
and matplotlib's Grace Hopper), scaled to chat-photo sizes and JPEG-encoded as a chat app would
deliver them. A naive "seed-style" pipeline built from the same libraries the way the original
research code used them (MTCNN on the full-size image, one request at a time, Keras `predict`
per face) runs in a process of its own (`python -m bot.bench`), so the speed-up is measured, not
claimed, and the memory reported is the bot's alone.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from PIL import Image

from ml.engine import EmotionEngine
from ml.faces import crop_face, published_mtcnn
from ml.loader import load_emotion_model
from ml.models import DEFAULT_MODEL, EmotionModel, KerasEmotionModel, preprocess_faces

Size = tuple[int, int]
SIZES: tuple[Size, ...] = ((640, 480), (1280, 960), (4000, 3000))


@dataclass(frozen=True)
class BenchPlan:
    """How much of each measurement to take."""

    sizes: tuple[Size, ...] = SIZES
    repeats: int = 20  # timed engine runs per size
    baseline_repeats: int = 4  # the seed-style pipeline is slow: fewer runs
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests_per_level: int = 64  # selfies sent at each concurrency level
    load_size: Size = (1280, 960)
    cold_start: bool = True
    music_repeats: int = 3000  # timed catalogue recommendations
    model_repeats: int = 300  # timed classifier calls on one face


FULL = BenchPlan()
# A CI smoke run: every code path, a few seconds of work, numbers not meaningful.
SMOKE = BenchPlan(
    sizes=((640, 480),),
    repeats=2,
    baseline_repeats=1,
    concurrency=(1, 4),
    requests_per_level=8,
    load_size=(640, 480),
    cold_start=False,
    music_repeats=60,
    model_repeats=5,
)


@dataclass(frozen=True)
class Target:
    """One line of issue 4's targets: `value(result) <= limit` (or >= for throughput)."""

    name: str
    limit: float
    value: Callable[[dict[str, Any]], float | None]
    at_least: bool = False

    def check(self, result: dict[str, Any]) -> dict[str, Any]:
        try:
            value = self.value(result)
        except (KeyError, TypeError):
            value = None
        met = (
            None
            if value is None
            else (value >= self.limit if self.at_least else value <= self.limit)
        )
        return {"limit": self.limit, "value": value, "met": met}


def _speedup(size: str) -> Callable[[dict[str, Any]], float]:
    return lambda r: r["baseline_latency_ms"][size]["p50"] / r["latency_ms"][size]["p50"]


TARGETS = (
    Target("1280x960 p50 ms", 150, lambda r: r["latency_ms"]["1280x960"]["p50"]),
    Target("1280x960 p95 ms", 300, lambda r: r["latency_ms"]["1280x960"]["p95"]),
    Target("4000x3000 p50 ms", 300, lambda r: r["latency_ms"]["4000x3000"]["p50"]),
    *(
        Target(f"{s} speed-up vs seed", 5, _speedup(s), at_least=True)
        for s in ("640x480", "1280x960", "4000x3000")
    ),
    Target(
        "selfies/s at 16 senders",
        8,
        lambda r: r["throughput"]["16"]["selfies_per_s"],
        at_least=True,
    ),
    Target("failed requests at 16 senders", 0, lambda r: r["throughput"]["16"]["failed"]),
    Target("event-loop lag p99 ms", 50, lambda r: r["loop_lag_p99_ms"]),
    Target("model ms a face p50", 15, lambda r: r["model_ms_per_face"]["p50"]),
    Target("RSS MB", 1536, lambda r: r["rss_mb"]),
    Target("recommendation p50 ms", 2, lambda r: r["music"]["recommend_ms"]["p50"]),
    Target("catalogue load s", 0.5, lambda r: r["music"]["catalogue_load_s"]),
    Target("catalogue RSS MB", 60, lambda r: r["music"]["catalogue_rss_mb"]),
    Target("cold start s", 10, lambda r: r["cold_start_s"]),
)


# --- photos -----------------------------------------------------------------------------------


PHOTOS_DIR = Path(__file__).parent / "photos"


def face_photos() -> list[Image.Image]:
    """The real face photos the tests use too (bot/photos/README.md says where they come from)."""
    import matplotlib

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return [Image.open(path).convert("RGB") for path in (PHOTOS_DIR / "astronaut.jpg", hopper)]


def chat_photo(source: Image.Image, size: Size, quality: int = 90) -> bytes:
    """`source` scaled to cover `size`, cropped to it, JPEG-encoded like a phone photo."""
    width, height = size
    scale = max(width / source.width, height / source.height)
    scaled = source.resize(
        (round(source.width * scale), round(source.height * scale)), Image.Resampling.BICUBIC
    )
    # Keep the upper part: a portrait's face sits in its top half.
    left, top = (scaled.width - width) // 2, (scaled.height - height) // 4
    buffer = io.BytesIO()
    scaled.crop((left, top, left + width, top + height)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def label(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


# --- measurements -----------------------------------------------------------------------------


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50 and p95 of a list of milliseconds (nearest-rank on the sorted samples)."""
    ordered = sorted(samples_ms)
    rank = min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[rank], 1),
        "n": len(ordered),
    }


def timed_ms(
    run: Callable[[bytes], object], photos: Sequence[bytes], repeats: int, *, warm: bool = True
) -> list[float]:
    """Wall time of `run` on the photos in turn, after one untimed run of each when `warm`."""
    for photo in photos if warm else ():
        run(photo)
    samples = []
    for i in range(repeats):
        started = time.perf_counter()
        run(photos[i % len(photos)])
        samples.append((time.perf_counter() - started) * 1000.0)
    return samples


def model_ms(engine: EmotionEngine, source: Image.Image, repeats: int) -> list[float]:
    """Wall time of the emotion model alone on one real face crop, as the engine calls it for
    a selfie with one face (preprocessing included, face detection not)."""
    pixels = np.asarray(source)
    crop = crop_face(pixels, engine.detector.detect(pixels)[0])
    return timed_ms(lambda _: engine.model.predict([crop]), [b""], repeats)


class SeedStylePipeline:
    """The original system's way: full-size image, eager MTCNN, one Keras predict per face.

    A model with no Keras form (a quantized bundle) answers as it does when served, so the
    baseline then differs from the bot in the face pipeline only.
    """

    def __init__(self, model: EmotionModel) -> None:
        from mtcnn import MTCNN

        self._detector = MTCNN()
        self._model = model

    def __call__(self, data: bytes) -> str | None:
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        with published_mtcnn():  # mtcnn exactly as published, without our fixes
            faces = self._detector.detect_faces(pixels)
        if not faces:
            return None
        x, y, w, h = (max(0, int(v)) for v in faces[0]["box"])
        crop = pixels[y : y + h, x : x + w]
        if isinstance(self._model, KerasEmotionModel):
            batch = preprocess_faces(self._model.spec, [crop])
            scores = self._model.keras_model.predict(batch, verbose=0)[0]
        else:
            scores = self._model.predict([crop])[0]
        return self._model.labels[int(np.argmax(scores))]


def baseline_latency_ms(model: str, sizes: Sequence[Size], repeats: int) -> dict[str, Any]:
    """The seed-style pipeline's latency per size, measured in a new process (see _baseline)."""
    command = [sys.executable, "-m", "bot.bench", model, str(repeats), *map(label, sizes)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(
            f"the seed-style baseline process failed (exit {done.returncode}): "
            f"{done.stderr.strip()[-500:]}"
        )
    return json.loads(done.stdout)


def _baseline(model: str, repeats: int, sizes: Sequence[Size]) -> dict[str, Any]:
    """What baseline_latency_ms runs in its own process: latency per size, and that RSS."""
    sources = face_photos()
    baseline = SeedStylePipeline(load_emotion_model(model))
    baseline(chat_photo(sources[0], (640, 480)))  # first call: Keras builds predict()
    latency = {}
    for size in sizes:
        # Not warmed per size: a full-size 12-megapixel run takes tens of seconds, and an
        # eager pipeline has nothing to trace or compile (it was warmed once at 640x480).
        photos = [chat_photo(source, size) for source in sources]
        latency[label(size)] = percentiles(timed_ms(baseline, photos, repeats, warm=False))
    return {"latency_ms": latency, "rss_mb": rss_mb()}


async def _loop_lag(stop: asyncio.Event, lags_ms: list[float], tick_s: float = 0.005) -> None:
    """How late the event loop wakes a sleeper: the delay every other coroutine sees too."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(tick_s)
        lags_ms.append(max(0.0, (time.perf_counter() - started - tick_s) * 1000.0))


async def _sender(
    engine: EmotionEngine, photos: Sequence[bytes], jobs: asyncio.Queue[int], out: dict[str, Any]
) -> None:
    while True:
        try:
            i = jobs.get_nowait()
        except asyncio.QueueEmpty:
            return
        started = time.perf_counter()
        try:
            await engine.analyze(photos[i % len(photos)])
        except Exception:  # busy, closed or failed: all count as a failed request
            out["failed"] += 1
            continue
        out["latencies"].append((time.perf_counter() - started) * 1000.0)


async def load_level(
    engine: EmotionEngine, photos: Sequence[bytes], senders: int, requests: int
) -> tuple[dict[str, Any], list[float]]:
    """`requests` selfies from `senders` concurrent coroutines; returns stats and loop lags."""
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        jobs.put_nowait(i)
    out: dict[str, Any] = {"failed": 0, "latencies": []}
    stop, lags = asyncio.Event(), []
    watcher = asyncio.create_task(_loop_lag(stop, lags))
    started = time.perf_counter()
    await asyncio.gather(*(_sender(engine, photos, jobs, out) for _ in range(senders)))
    elapsed = time.perf_counter() - started
    stop.set()
    await watcher
    stats = {
        "selfies_per_s": round(len(out["latencies"]) / elapsed, 2),
        "latency_ms": percentiles(out["latencies"]) if out["latencies"] else None,
        "failed": out["failed"],
        "loop_lag_p99_ms": round(float(np.percentile(lags, 99)), 1) if lags else None,
    }
    return stats, lags


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), else its peak (getrusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    import resource

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak_kb / 1024.0, 1)


def cold_start_s(photo: bytes, model: str) -> float:
    """Seconds from starting `moodbot analyze` in a new process to its printed answer."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "selfie.jpg"
        path.write_bytes(photo)
        command = [sys.executable, "-m", "bot.cli", "analyze", str(path), "--model", model]
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert process.stdout is not None
        first_line = process.stdout.readline()
        elapsed = time.perf_counter() - started
        process.communicate(timeout=60)
    if process.returncode != 0 or not first_line:
        raise RuntimeError(
            f"`moodbot analyze` failed during the cold-start run (exit {process.returncode})"
        )
    return round(elapsed, 2)


# --- the whole run ----------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "platform": platform.platform(),
    }


# --- music -----------------------------------------------------------------------------------

# Run in a fresh interpreter, so that the catalogue's memory is not hidden among TensorFlow's.
_CATALOGUE_COST = """
import json, time
import numpy
from bot.catalogue import Catalogue
from bot.picker import Picker
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
before = rss_mb()
started = time.perf_counter()
picker = Picker(Catalogue.load())
seconds = time.perf_counter() - started
print(json.dumps({"load_s": seconds, "rss_mb": rss_mb() - before, "tracks": len(picker.catalogue)}))
"""


def catalogue_cost() -> dict[str, float]:
    """Seconds and MB of RSS that loading the shipped catalogue (and its picker) costs."""
    done = subprocess.run(
        [sys.executable, "-c", _CATALOGUE_COST],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"catalogue cost run failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def music_bench(repeats: int) -> dict[str, Any]:
    """Recommendation latency on the shipped catalogue, and what loading the catalogue costs.

    Each request is a mood, a mode and a genre (none, k-pop or acoustic) with a person's last
    50 tracks to leave out: what a reply asks of the picker.
    """
    import random

    from bot.catalogue import Catalogue
    from bot.moodspace import MODES, PLACES, target_for
    from bot.picker import Picker

    cost = catalogue_cost()
    picker = Picker(Catalogue.load())
    heard = [picker.catalogue.ids[i].decode() for i in range(0, 50 * 997, 997)]
    requests = [
        (target_for(mood, mode), genre)
        for mood in PLACES
        for mode in MODES
        for genre in (None, "k-pop", "acoustic")
    ]
    rng = random.Random(0)
    for target, genre in requests:  # first use of a genre builds its pool
        picker.pick(target, genre=genre, exclude_ids=heard, rng=rng)
    samples = []
    for i in range(repeats):
        target, genre = requests[i % len(requests)]
        started = time.perf_counter()
        picker.pick(target, genre=genre, exclude_ids=heard, rng=rng)
        samples.append((time.perf_counter() - started) * 1000)
    return {
        "recommend_ms": percentiles(samples),
        "catalogue_load_s": round(cost["load_s"], 3),
        "catalogue_rss_mb": round(cost["rss_mb"], 1),
        "catalogue_tracks": int(cost["tracks"]),
    }


def music_summary(music: dict[str, Any]) -> str:
    latency = music["recommend_ms"]
    return (
        f"music: recommendation p50 {latency['p50']:.2f} ms  p95 {latency['p95']:.2f} ms; "
        f"catalogue of {music['catalogue_tracks']} tracks loads in "
        f"{music['catalogue_load_s']:.3f} s, {music['catalogue_rss_mb']:.1f} MB RSS"
    )


def run_bench(
    engine: EmotionEngine, plan: BenchPlan = FULL, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every measurement of issue 4 in one run; the keys follow `moodbot bench --json`."""
    sources = face_photos()
    result: dict[str, Any] = {"model": engine.model.spec.name, "machine": machine()}
    result["rss_mb_after_warmup"] = rss_mb()
    progress("the emotion model alone, one face a call")
    result["model_ms_per_face"] = percentiles(model_ms(engine, sources[0], plan.model_repeats))
    result["latency_ms"] = {}
    for size in plan.sizes:
        photos = [chat_photo(source, size) for source in sources]
        progress(f"latency at {label(size)}")
        result["latency_ms"][label(size)] = percentiles(
            timed_ms(engine.analyze_blocking, photos, plan.repeats)
        )
    load_photos = [chat_photo(source, plan.load_size) for source in sources]
    result["throughput"], all_lags = {}, []
    for senders in plan.concurrency:
        progress(f"throughput with {senders} concurrent senders")
        stats, lags = asyncio.run(load_level(engine, load_photos, senders, plan.requests_per_level))
        result["throughput"][str(senders)] = stats
        all_lags.extend(lags)
    result["loop_lag_p99_ms"] = round(float(np.percentile(all_lags, 99)), 1) if all_lags else None
    result["rss_mb"] = rss_mb()  # before the baseline: it runs in a process of its own
    progress("seed-style baseline, in its own process")
    baseline = baseline_latency_ms(engine.model.spec.name, plan.sizes, plan.baseline_repeats)
    result["baseline_latency_ms"] = baseline["latency_ms"]
    result["baseline_rss_mb"] = baseline["rss_mb"]
    result["cold_start_s"] = None
    if plan.cold_start:
        progress("cold start")
        result["cold_start_s"] = cold_start_s(load_photos[0], engine.model.spec.name)
    progress("music recommendations")
    result["music"] = music_bench(plan.music_repeats)
    result["targets"] = {t.name: t.check(result) for t in TARGETS}
    return result


def summary(result: dict[str, Any]) -> str:
    """The human-readable table `moodbot bench` prints."""
    host = result["machine"]
    lines = [f"model {result['model']} on {host['cores']} cores ({host['cpu']})"]
    alone = result["model_ms_per_face"]
    lines.append(f"the model alone: p50 {alone['p50']:.1f} ms  p95 {alone['p95']:.1f} ms a face")
    for size, stats in result["latency_ms"].items():
        base = result["baseline_latency_ms"][size]
        lines.append(
            f"{size:>10}: p50 {stats['p50']:7.1f} ms  p95 {stats['p95']:7.1f} ms   "
            f"seed-style p50 {base['p50']:8.1f} ms  ({base['p50'] / stats['p50']:.1f}x)"
        )
    for senders, stats in result["throughput"].items():
        lat = stats["latency_ms"] or {"p50": float("nan"), "p95": float("nan")}
        lines.append(
            f"{senders:>3} senders: {stats['selfies_per_s']:6.2f} selfies/s  "
            f"p50 {lat['p50']:7.1f} ms  p95 {lat['p95']:7.1f} ms  failed {stats['failed']}  "
            f"loop lag p99 {stats['loop_lag_p99_ms']} ms"
        )
    lines.append(
        f"event-loop lag p99 {result['loop_lag_p99_ms']} ms, RSS {result['rss_mb']} MB "
        f"(the seed-style baseline's own process: {result['baseline_rss_mb']} MB), "
        f"cold start {result['cold_start_s']} s"
    )
    lines.append(music_summary(result["music"]))
    for name, check in result["targets"].items():
        verdict = {True: "met", False: "MISSED", None: "not measured"}[check["met"]]
        value = "-" if check["value"] is None else f"{check['value']:.1f}"
        lines.append(f"  target {name}: {value} (limit {check['limit']}) {verdict}")
    return "\n".join(lines)


# --- the command ------------------------------------------------------------------------------


def bench_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    smoke: Annotated[
        bool, typer.Option("--smoke", help="A few seconds of every measurement (CI).")
    ] = False,
    model: Annotated[
        str, typer.Option("--model", help="Built-in model name or bundle directory.")
    ] = DEFAULT_MODEL,
    output: Annotated[
        Path | None, typer.Option("--output", help="Also write the JSON to this file.")
    ] = None,
    music_only: Annotated[
        bool, typer.Option("--music", help="Only the music: recommendations and the catalogue.")
    ] = False,
) -> None:
    """Measure latency, throughput, event-loop lag, memory and cold start of the engine, and
    the music recommendations (latency, catalogue load time and memory)."""
    plan = SMOKE if smoke else FULL
    if music_only:
        music = music_bench(plan.music_repeats)
        typer.echo(json.dumps(music, indent=2) if as_json else music_summary(music))
        return
    started = time.perf_counter()
    engine = EmotionEngine.load(model)
    say = (lambda message: typer.echo(message, err=True)) if as_json else typer.echo
    try:
        result = run_bench(engine, plan, progress=say)
    finally:
        engine.close()
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
    typer.echo(text if as_json else summary(result))


def _baseline_main(argv: Sequence[str]) -> None:
    """`python -m bot.bench MODEL REPEATS WxH...`: print _baseline's result as JSON."""
    model, repeats, *sizes = argv
    parsed = [(int(w), int(h)) for w, _, h in (size.partition("x") for size in sizes)]
    print(json.dumps(_baseline(model, int(repeats), parsed)))


if __name__ == "__main__":
    _baseline_main(sys.argv[1:])
