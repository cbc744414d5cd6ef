"""Benchmark: one 2048x2048 image exported to every preset of social_pack + ecommerce_pack.

Three ways, measured in the same process, interleaved round by round (1 warm-up round, then
ROUNDS rounds; the median is reported):

* genhook -- ``export_all(to_vips(pixels), presets)``;
* plain pyvips -- what a developer would write with pyvips directly (the baseline);
* Pillow -- a naive Pillow version (``ImageOps.fit`` centre crop / ``ImageOps.pad``, LANCZOS).

Exits 1 when genhook takes more than TARGET x the plain pyvips time.
Run: ``make bench`` or ``.venv/bin/python bench/export.py``.
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pyvips
from PIL import Image, ImageOps, features

from genhook.media.export import export_all, to_vips
from genhook.presets import PlatformPreset, load_presets

SIZE = 2048
BUNDLES = ("social_pack", "ecommerce_pack")
WARMUP = 1
ROUNDS = 7
TARGET = 1.15
HAVE_PILLOW_AVIF = bool(features.check("avif"))

Outputs = list[tuple[int, int, bytes]]


def make_pixels(size: int = SIZE, seed: int = 7) -> npt.NDArray[np.uint8]:
    """A deterministic test image with real detail: gradients, shapes, texture and fine noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.stack(
        [
            200 * x + 30 * np.sin(9 * y),
            60 + 150 * y * (1 - x),
            90 + 100 * np.cos(5 * (x + y)),
        ],
        axis=-1,
    )
    for _ in range(40):  # discs of random colour, with a soft edge
        cx, cy = rng.uniform(0, 1, 2)
        radius = rng.uniform(0.02, 0.15)
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        dist = np.hypot(x - cx, y - cy)
        alpha = np.clip((radius - dist) * size / 3, 0, 1)[..., None]
        img = img * (1 - alpha) + colour * alpha
    for _ in range(25):  # rectangles with a stripe texture
        x0, y0 = rng.integers(0, size - 200, 2)
        w, h = (
            int(min(v, size - v0)) for v, v0 in zip(rng.integers(40, 400, 2), (x0, y0), strict=True)
        )
        period = rng.uniform(3, 30)
        stripes = 127 + 100 * np.sin(np.arange(w, dtype=np.float32) * 2 * np.pi / period)
        img[y0 : y0 + h, x0 : x0 + w] = stripes[None, :w, None] * rng.uniform(0.3, 1, 3)
    img += rng.normal(0, 6, img.shape).astype(np.float32)  # sensor-like grain
    return np.clip(img, 0, 255).astype(np.uint8)


def bench_presets() -> list[PlatformPreset]:
    """The presets of BUNDLES, in bundle order, each once."""
    presets = load_presets()
    chosen: dict[str, PlatformPreset] = {}
    for bundle in BUNDLES:
        for preset in presets.resolve_platforms(bundle) or []:
            chosen.setdefault(preset.code, preset)
    return list(chosen.values())


def rgb(hex_colour: str) -> list[int]:
    return [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]


def run_genhook(pixels: npt.NDArray[np.uint8], presets: list[PlatformPreset]) -> Outputs:
    return [(e.width, e.height, e.data) for e in export_all(to_vips(pixels), presets)]


def run_genhook_serial(pixels: npt.NDArray[np.uint8], presets: list[PlatformPreset]) -> Outputs:
    outputs = export_all(to_vips(pixels), presets, workers=1)
    return [(e.width, e.height, e.data) for e in outputs]


def run_plain_pyvips(pixels: npt.NDArray[np.uint8], presets: list[PlatformPreset]) -> Outputs:
    """The baseline: straight pyvips, same fits and encoder parameters as genhook."""
    source = pyvips.Image.new_from_array(pixels)
    outputs: Outputs = []
    for p in presets:
        if p.fit == "crop":
            out = source.thumbnail_image(p.width, height=p.height, crop="attention", size="both")
        else:
            out = source.thumbnail_image(p.width, height=p.height, size="both")
            out = out.gravity(
                "centre", p.width, p.height, extend="background", background=rgb(p.background)
            )
        if p.format == "jpeg":
            data = out.jpegsave_buffer(Q=p.quality, optimize_coding=True, keep=0)
        elif p.format == "webp":
            data = out.webpsave_buffer(Q=p.quality, effort=2, keep=0)
        elif p.format == "png":
            data = out.pngsave_buffer(compression=2, filter=0xF8, keep=0)
        else:
            data = out.heifsave_buffer(Q=p.quality, compression="av1", effort=3, bitdepth=8, keep=0)
        outputs.append((out.width, out.height, data))
    return outputs


def run_pillow(pixels: npt.NDArray[np.uint8], presets: list[PlatformPreset]) -> Outputs:
    """A naive Pillow version: centre crop (no smart crop), LANCZOS, same formats and qualities."""
    source = Image.fromarray(pixels)
    outputs: Outputs = []
    for p in presets:
        box = (p.width, p.height)
        if p.fit == "crop":
            out = ImageOps.fit(source, box, Image.Resampling.LANCZOS)
        else:
            out = ImageOps.pad(
                source, box, Image.Resampling.LANCZOS, color=tuple(rgb(p.background))
            )
        buffer = io.BytesIO()
        if p.format == "jpeg":  # libvips' "auto" chroma subsampling: 4:4:4 from Q 90 up
            subsampling = 0 if p.quality >= 90 else 2
            out.save(buffer, "JPEG", quality=p.quality, optimize=True, subsampling=subsampling)
        elif p.format == "webp":
            out.save(buffer, "WEBP", quality=p.quality, method=2)
        elif p.format == "png":
            out.save(buffer, "PNG", compress_level=2)
        elif HAVE_PILLOW_AVIF:  # speed 6 is what libheif uses for libvips' effort 3
            out.save(buffer, "AVIF", quality=p.quality, speed=6)
        outputs.append((out.width, out.height, buffer.getvalue()))
    return outputs


def main() -> int:
    pixels = make_pixels()
    presets = bench_presets()
    runners: dict[str, Callable[[npt.NDArray[np.uint8], list[PlatformPreset]], Outputs]] = {
        "genhook": run_genhook,
        "genhook 1 thr": run_genhook_serial,
        "plain pyvips": run_plain_pyvips,
        "pillow": run_pillow,
    }
    times: dict[str, list[float]] = {name: [] for name in runners}
    outputs: dict[str, Outputs] = {}
    for round_no in range(WARMUP + ROUNDS):
        for name, runner in runners.items():
            start = time.perf_counter()
            outputs[name] = runner(pixels, presets)
            elapsed = time.perf_counter() - start
            if round_no >= WARMUP:
                times[name].append(elapsed)

    wanted = [(p.width, p.height) for p in presets]
    for name in ("genhook", "genhook 1 thr", "plain pyvips"):
        got = [(w, h) for w, h, _ in outputs[name]]
        if got != wanted:
            print(f"FAIL: {name} output sizes {got} != presets {wanted}")
            return 1
    same = sum(
        g[2] == b[2] for g, b in zip(outputs["genhook"], outputs["plain pyvips"], strict=True)
    )

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    base = medians["plain pyvips"]
    print(
        f"export: one {SIZE}x{SIZE} image -> {len(presets)} presets ({' + '.join(BUNDLES)}): "
        + ", ".join(p.code for p in presets)
    )
    libvips = ".".join(str(pyvips.version(i)) for i in range(3))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores,"
        f" python {platform.python_version()}, libvips {libvips},"
        f" Pillow {Image.__version__}; {ROUNDS} rounds after {WARMUP} warm-up, medians"
    )
    print(f"{'way':<14}{'median s':>10}{'min s':>9}{'max s':>9}{'vs plain':>10}")
    for name in runners:
        ts = times[name]
        ratio = medians[name] / base
        print(f"{name:<14}{medians[name]:>10.3f}{min(ts):>9.3f}{max(ts):>9.3f}{ratio:>9.2f}x")
    print(f"genhook output byte-identical to plain pyvips for {same}/{len(presets)} presets")
    if not HAVE_PILLOW_AVIF:
        print("note: this Pillow cannot write AVIF; its AVIF preset was resized but not encoded")
    ratio = medians["genhook"] / base
    verdict = "ok" if ratio <= TARGET else "FAIL"
    print(f"{verdict}: genhook / plain pyvips = {ratio:.2f}x (target <= {TARGET:.2f}x)")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
