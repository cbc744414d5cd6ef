"""The memory-lean paths of rendering, quality checks and export give the same results as the
plain ones they replace, and a worker's memory settings take effect.

Each lean path (band-by-band copies, one channel at a time, a label drawn in place, figures
from exact integer sums) is held to a plain reference implementation written here the obvious
way, on real images: the same bytes, or for floating-point figures the same value to the last
few units of rounding.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from genhook.media import qc
from genhook.media.export import export_all, to_vips
from genhook.media.procedural import render, text
from genhook.media.procedural.backdrop import backdrop
from genhook.media.procedural.fields import add_dither, dither_tile, image_of, pixels_of
from genhook.media.procedural.lighting import named_light
from genhook.media.procedural.palette import parse_palette, scheme
from genhook.media.procedural.shapes import paint, rrect
from genhook.media.procedural.text import draw_label
from genhook.media.procedural.typography import ellipsize, font_at
from genhook.nodes.targets import resolve_targets
from genhook.presets import load_presets

PALETTE = ["#1d3557", "#457b9d", "#a8dadc", "#f1faee"]
SIZES = [(1, 1), (3, 700), (257, 129), (640, 480), (1000, 1500)]


def _noise(w: int, h: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_band_copies_are_the_whole_image_copies(w: int, h: int) -> None:
    pixels = _noise(w, h)
    img = Image.fromarray(pixels)
    assert pixels_of(img).tobytes() == np.array(img).tobytes()
    assert image_of(pixels).tobytes() == Image.fromarray(pixels).tobytes()


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_dither_in_bands_is_the_whole_tile(w: int, h: int) -> None:
    plane = np.random.default_rng(2).integers(0, 65280, (h, w), dtype=np.uint16)
    expected = plane + dither_tile(h, w, 256)
    add_dither(plane, 256)
    assert np.array_equal(plane, expected)


def _backdrop_whole(w: int, h: int, *args: Any) -> bytes:
    """The backdrop as it was made before: all three channels upscaled at once, a full-size
    dither plane, one full-size shift. The coarse fields are the lean backdrop's own (the
    planes it hands to ``cv2.resize``)."""
    import genhook.media.procedural.backdrop as module

    planes: list[np.ndarray] = []
    real_resize = module.cv2.resize

    def spy(src: np.ndarray, *a: Any, **k: Any) -> Any:
        planes.append(src)
        return real_resize(src, *a, **k)

    module.cv2.resize = spy
    try:
        backdrop(w, h, *args)
    finally:
        module.cv2.resize = real_resize
    fixed = np.dstack(planes)
    up = cv2.resize(fixed, (w, h), interpolation=cv2.INTER_LINEAR_EXACT).reshape(h, w, 3)
    dither = np.repeat(dither_tile(h, w, 256)[:, :, None], 3, axis=2)
    summed = np.asarray(cv2.add(up, dither), dtype=np.uint16)
    return Image.fromarray(np.right_shift(summed, 8).astype(np.uint8)).tobytes()


@pytest.mark.parametrize("light", ["softbox", "window", "neon"])
@pytest.mark.parametrize(("w", "h"), [(16, 16), (333, 517), (1024, 640)])
def test_the_backdrop_one_channel_at_a_time_is_the_three_at_once(
    light: str, w: int, h: int
) -> None:
    sc = scheme(parse_palette(PALETTE), np.random.default_rng(3))
    args = (sc, named_light(light, mirror=False), 0.4)
    assert backdrop(w, h, *args).tobytes() == _backdrop_whole(w, h, *args)


def _label_on_the_whole(img: Image.Image, label: str, size: int) -> None:
    """The label as it was drawn before: on the image it is given, every pixel of it at hand."""
    label = " ".join(label.split())
    w, h = img.size
    font, pad, margin = font_at(size), 0.6 * size, 0.025 * min(w, h)
    room = w - 2 * pad - 2 * margin
    if font.getlength(label) > room:
        label = ellipsize(label, font, room)
    right, bottom = w - margin, h - margin
    box = (right - font.getlength(label) - 2 * pad, bottom - 1.9 * size, right, bottom)
    light_bg = text._region_luminance(img, box)[1] > 0.3
    pill, ink = ((255, 255, 255), (34, 34, 36)) if light_bg else ((0, 0, 0), (240, 240, 238))
    paint(img, pill, 0.62 if light_bg else 0.5, box, rrect(box, 0.95 * size))
    xy = (box[0] + pad, (box[1] + box[3]) / 2 + font.middle())
    font.draw(ImageDraw.Draw(img), xy, label, ink)


@pytest.mark.parametrize(
    ("w", "h", "frame"),
    [
        (640, 480, (0, 0, 640, 480)),
        (640, 480, (64, 24, 576, 456)),
        (300, 900, (120, 400, 180, 500)),  # a frame too small for the pill: clipped to it
        (64, 40, (6, 2, 58, 38)),
        (1200, 800, (1, 1, 1199, 799)),
    ],
)
@pytest.mark.parametrize("label", ["procedural render · seed 12", "a long label " * 12])
def test_a_label_drawn_in_place_is_the_label_drawn_on_a_copy_of_its_frame(
    w: int, h: int, frame: tuple[int, int, int, int], label: str
) -> None:
    """What the label looked like when drawn on a crop of the whole frame, pasted back."""
    base = Image.fromarray(_noise(w, h, seed=4))
    expected = base.copy()
    inner = expected.crop(frame)
    _label_on_the_whole(inner, label, 14)
    expected.paste(inner, frame[:2])
    drawn = base.copy()
    draw_label(drawn, label, 14, frame)
    assert drawn.tobytes() == expected.tobytes()


@pytest.mark.parametrize(("w", "h"), [(1, 1), (7, 3), (640, 480), (2048, 1365)])
def test_contrast_brightness_and_sharpness_are_numpys_to_the_last_digits(w: int, h: int) -> None:
    pixels = render(
        prompt="p", subject="Mug", palette=PALETTE, lighting="rim", width=w, height=h, seed=9
    )
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    measured = qc.measure(pixels)
    assert measured.contrast == pytest.approx(float(gray.std()), rel=1e-12, abs=1e-12)
    assert measured.brightness == pytest.approx(float(gray.mean()), rel=1e-12)
    small, _ = qc._fit(gray, qc.SHARPNESS_SIDE)
    reference = float(cv2.Laplacian(small, cv2.CV_64F).var())
    assert measured.sharpness == pytest.approx(reference, rel=1e-12, abs=1e-12)


def test_a_wrapped_array_is_a_memory_image_and_exports_as_a_copied_one() -> None:
    """to_vips's image is read where the array is (export_all renders nothing again), and its
    outputs are those of the image libvips copies from the array."""
    pixels = render(
        prompt="p",
        subject="Tote",
        palette=PALETTE,
        lighting="softbox",
        width=900,
        height=700,
        seed=2,
    )
    presets = resolve_targets("social_pack", load_presets())
    wrapped = to_vips(pixels)
    assert wrapped.interpretation == "srgb" and wrapped.bands == 3
    import pyvips

    copied = pyvips.Image.new_from_array(pixels).copy(interpretation="srgb")
    assert [e.data for e in export_all(wrapped, presets)] == [
        e.data for e in export_all(copied, presets)
    ]


SETTINGS_CHILD = """
import json
import numpy as np
import pyvips
from PIL import _imaging
from genhook.media.memory import configure_for_rendering, release_free_memory

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

applied = configure_for_rendering()
small = release_free_memory()
blocks = [np.ones(200_000) for _ in range(60)]  # 1.6 MB each: from the heap, not mapped
del blocks[::2]  # 48 MB free between blocks still in use: no free() can return it
before = rss()
big = release_free_memory()
print(json.dumps({
    "applied": applied, "cache": pyvips.cache_get_max(), "threads": pyvips.concurrency_get(),
    "pillow_block": _imaging.get_block_size(), "small": small, "big": big,
    "returned_kib": before - rss(),
}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_worker_s_memory_settings_take_effect_and_free_memory_goes_back() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SETTINGS_CHILD],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PATH": "/usr/bin:/bin"},  # no VIPS_CONCURRENCY or PILLOW_BLOCK_SIZE of ours
    )
    seen = json.loads(done.stdout)
    assert seen["applied"] is True
    assert seen["cache"] == 0 and seen["threads"] == 1
    assert seen["pillow_block"] == 1024 * 1024
    assert seen["small"] is False  # little free: nothing to hand back
    assert seen["big"] is True and seen["returned_kib"] > 30 * 1024
