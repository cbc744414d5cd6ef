"""Benchmark: one 5 s 1080p 24 fps clip exported to the four platform video presets.

The presets: 9:16 1080x1920, 1:1 1080x1080, 4:5 1080x1350 (all centre crop) and 16:9
1920x1080, H.264 in MP4, the same x264 preset and CRF everywhere. Measured in the same process,
interleaved round by round (1 warm-up round, then ROUNDS rounds; medians of wall and CPU time):

* genhook -- ``export_video(source, targets, out_dir, stem_for=...)`` (posters included);
* ffmpeg (the baseline, when an ``ffmpeg`` binary is on the PATH) -- one command line: decode
  once, ``split`` into four chains of ``crop``/``scale``, four libx264 outputs with
  ``+faststart``;
* plain PyAV (the baseline when there is no ffmpeg, shown beside it otherwise) -- the obvious
  script: decode once, one filter graph per output, each frame through each graph and encoder in
  turn, in one thread.

The source clip is synthesised with PyAV: moving gradients, drifting discs and a scrolling
stripe texture with light grain, so that motion search and the entropy coder have real work.
Exits 1 when genhook takes more than TARGET x the baseline's wall time.

Run: ``.venv/bin/python bench/video_export.py`` (``--rounds N``, ``--preset P``, ``--crf C``;
``--presets a,b,c`` also times genhook alone at each x264 preset and prints the file sizes).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from genhook.media import video_export
from genhook.media.video_export import VideoTarget, export_video, fit_geometry

WIDTH, HEIGHT, FPS, SECONDS = 1920, 1080, 24, 5
WARMUP = 1
ROUNDS = 3
TARGET = 1.15
CRF = 23


def targets(crf: int = CRF) -> list[VideoTarget]:
    """The four platform video presets."""
    return [
        VideoTarget("reels_9x16", 1080, 1920, "crop", crf, "#000000", "jpeg"),
        VideoTarget("square_1x1", 1080, 1080, "crop", crf, "#000000", "jpeg"),
        VideoTarget("portrait_4x5", 1080, 1350, "crop", crf, "#000000", "jpeg"),
        VideoTarget("landscape_16x9", 1920, 1080, "crop", crf, "#000000", "jpeg"),
    ]


def make_source(path: Path, seed: int = 11) -> None:
    """A deterministic 5 s 1080p 24 fps H.264 clip with moving, textured content."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    discs = []
    for _ in range(12):
        cx, cy, r = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT), rng.uniform(40, 220)
        vx, vy = rng.uniform(-14, 14, 2)
        discs.append((cx, cy, r, vx, vy, rng.uniform(0, 255, 3)))
    stripes = 127 + 90 * np.sin(x[:1, :] * 2 * np.pi / 23)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.options = {"crf": "16", "preset": "ultrafast"}
        for i in range(FPS * SECONDS):
            t = i / FPS
            img = np.empty((HEIGHT, WIDTH, 3), np.float32)
            img[..., 0] = 128 + 100 * np.sin(x / 310 + 1.3 * t)
            img[..., 1] = 128 + 100 * np.cos(y / 170 - 0.9 * t)
            img[..., 2] = 128 + 80 * np.sin((x + y) / 400 + 0.5 * t)
            band = slice(HEIGHT // 2 - 120, HEIGHT // 2 + 120)
            img[band] = np.roll(stripes, i * 9, axis=1)[..., None] * np.array([1.0, 0.8, 0.6])
            for cx, cy, r, vx, vy, colour in discs:
                px, py = (cx + vx * i) % WIDTH, (cy + vy * i) % HEIGHT
                x0, x1 = int(max(px - r, 0)), int(min(px + r + 1, WIDTH))
                y0, y1 = int(max(py - r, 0)), int(min(py + r + 1, HEIGHT))
                sub = (slice(y0, y1), slice(x0, x1))
                alpha = np.clip(r - np.hypot(x[sub] - px, y[sub] - py), 0, 1)[..., None]
                img[sub] = img[sub] * (1 - alpha) + colour * alpha
            img += rng.normal(0, 3, (HEIGHT, WIDTH, 1)).astype(np.float32)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), "rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def _chain(target: VideoTarget, src_w: int, src_h: int) -> str:
    g = fit_geometry(src_w, src_h, target)
    parts = []
    if g.crop is not None:
        parts.append("crop={}:{}:{}:{}".format(*g.crop))
    parts.append(f"scale={g.scaled[0]}:{g.scaled[1]}:flags=bicubic")
    if g.pad is not None:
        parts.append(f"pad={target.width}:{target.height}:{g.pad[0]}:{g.pad[1]}")
    return ",".join([*parts, "setsar=1", "format=yuv420p"])


def run_genhook(source: Path, out: Path, ts: list[VideoTarget], preset: str) -> list[Path]:
    done = export_video(source, ts, out, stem_for=lambda t: f"genhook-{t.code}", x264_preset=preset)
    return [e.path for e in done]


def run_ffmpeg(source: Path, out: Path, ts: list[VideoTarget], preset: str) -> list[Path]:
    """One ffmpeg command line: decode once, split, four crop/scale chains, four encodes."""
    labels = [f"v{i}" for i in range(len(ts))]
    graph = f"[0:v]split={len(ts)}" + "".join(f"[s{i}]" for i in range(len(ts))) + ";"
    graph += ";".join(
        f"[s{i}]{_chain(t, WIDTH, HEIGHT)}[{label}]"
        for i, (t, label) in enumerate(zip(ts, labels, strict=True))
    )
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-y", "-i", str(source)]
    cmd += ["-filter_complex", graph]
    paths = []
    for t, label in zip(ts, labels, strict=True):
        path = out / f"ffmpeg-{t.code}.mp4"
        cmd += ["-map", f"[{label}]", "-c:v", "libx264", "-preset", preset, "-crf", str(t.crf)]
        cmd += ["-g", str(2 * FPS), "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)]
        paths.append(path)
    subprocess.run(cmd, check=True)
    return paths


def run_plain_pyav(source: Path, out: Path, ts: list[VideoTarget], preset: str) -> list[Path]:
    """The obvious PyAV script: decode once; per frame, each output's graph and encoder in turn."""
    paths = [out / f"pyav-{t.code}.mp4" for t in ts]
    with av.open(str(source)) as src:
        vin = src.streams.video[0]
        vin.thread_type = "AUTO"
        outs, streams, graphs = [], [], []
        for t, path in zip(ts, paths, strict=True):
            container = av.open(str(path), "w", options={"movflags": "+faststart"})
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = t.width, t.height, "yuv420p"
            stream.codec_context.gop_size = 2 * FPS
            stream.codec_context.options = {"crf": str(t.crf), "preset": preset}
            graph = av.filter.Graph()
            buffer = graph.add_buffer(template=vin)
            nodes = [buffer]
            for part in _chain(t, WIDTH, HEIGHT).split(","):
                name, _, args = part.partition("=")
                nodes.append(graph.add(name, args or None))
            nodes.append(graph.add("buffersink"))
            graph.link_nodes(*nodes).configure()
            outs.append(container)
            streams.append(stream)
            graphs.append(graph)
        for index, frame in enumerate(src.decode(vin)):
            for container, stream, graph in zip(outs, streams, graphs, strict=True):
                graph.vpush(frame)
                scaled = graph.vpull()
                scaled.pts, scaled.time_base = index, Fraction(1, FPS)
                container.mux(stream.encode(scaled))
        for container, stream in zip(outs, streams, strict=True):
            container.mux(stream.encode(None))
            container.close()
    return paths


def check_outputs(paths: list[Path], ts: list[VideoTarget]) -> str | None:
    for path, t in zip(paths, ts, strict=True):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            frames = sum(1 for _ in c.decode(s))
            if (s.width, s.height, s.codec_context.name) != (t.width, t.height, "h264"):
                return f"{path.name}: {s.width}x{s.height} {s.codec_context.name}"
            if frames != FPS * SECONDS or s.average_rate != Fraction(FPS):
                return f"{path.name}: {frames} frames at {s.average_rate} fps"
    return None


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


Runner = Callable[[Path, Path, list[VideoTarget], str], list[Path]]


def timed(runner: Runner, source: Path, out: Path, ts: list[VideoTarget], preset: str):  # type: ignore[no-untyped-def]
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cpu0, child0, wall0 = time.process_time(), children_cpu(), time.perf_counter()
    paths = runner(source, out, ts, preset)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0 + children_cpu() - child0
    return wall, cpu, paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--preset", default=video_export.DEFAULT_X264_PRESET)
    parser.add_argument("--crf", type=int, default=CRF)
    parser.add_argument("--presets", default="", help="also time genhook at these x264 presets")
    parser.add_argument("--threads", type=int, default=None, help="x264 threads per encoder")
    args = parser.parse_args()
    if args.threads is not None:
        video_export.X264_THREADS = args.threads
    ts = targets(args.crf)
    have_ffmpeg = shutil.which("ffmpeg") is not None
    runners: dict[str, Runner] = {"genhook": run_genhook}
    if have_ffmpeg:
        runners["ffmpeg"] = run_ffmpeg
    runners["plain pyav"] = run_plain_pyav
    baseline = "ffmpeg" if have_ffmpeg else "plain pyav"

    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        work = Path(tmp)
        source = work / "source.mp4"
        t0 = time.perf_counter()
        make_source(source)
        made = time.perf_counter() - t0
        walls: dict[str, list[float]] = {name: [] for name in runners}
        cpus: dict[str, list[float]] = {name: [] for name in runners}
        sizes: dict[str, int] = {}
        for round_no in range(WARMUP + args.rounds):
            order = list(runners.items())
            if round_no % 2:
                order.reverse()
            for name, runner in order:
                wall, cpu, paths = timed(runner, source, work / name, ts, args.preset)
                if round_no == 0:
                    problem = check_outputs(paths, ts)
                    if problem:
                        print(f"FAIL: {name}: {problem}")
                        return 1
                    sizes[name] = sum(p.stat().st_size for p in paths)
                else:
                    walls[name].append(wall)
                    cpus[name].append(cpu)

        print(
            f"video export: one {SECONDS} s {WIDTH}x{HEIGHT} {FPS} fps clip"
            f" ({source.stat().st_size // 1024} KiB, made in {made:.1f} s) -> "
            + ", ".join(f"{t.code} {t.width}x{t.height}" for t in ts)
        )
        threads = video_export.X264_THREADS or "cores/targets"
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f},"
            f" python {platform.python_version()}, PyAV {av.__version__}, libx264 preset"
            f" {args.preset}, crf {args.crf}, x264 threads {threads};"
            f" {args.rounds} rounds after {WARMUP} warm-up, medians"
        )
        base = statistics.median(walls[baseline])
        print(
            f"{'way':<12}{'wall s':>8}{'min':>7}{'max':>7}{'cpu s':>8}{'MiB out':>9}{'vs base':>9}"
        )
        for name in runners:
            w = walls[name]
            med = statistics.median(w)
            print(
                f"{name:<12}{med:>8.2f}{min(w):>7.2f}{max(w):>7.2f}"
                f"{statistics.median(cpus[name]):>8.2f}{sizes[name] / 2**20:>9.2f}"
                f"{med / base:>8.2f}x"
            )
        for preset in [p for p in args.presets.split(",") if p]:
            wall, cpu, paths = timed(run_genhook, source, work / "p", ts, preset)
            size = sum(p.stat().st_size for p in paths) / 2**20
            print(f"x264 preset {preset:<10} wall {wall:6.2f} s  cpu {cpu:6.2f} s  {size:6.2f} MiB")
        ratio = statistics.median(walls["genhook"]) / base
        verdict = "ok" if ratio <= TARGET else "FAIL"
        print(f"{verdict}: genhook / {baseline} = {ratio:.2f}x (target <= {TARGET:.2f}x)")
        return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
