"""The procedural renderer: deterministic, composed, sized as asked, and passing real QC."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from genhook.backends.base import GenerationRequest
from genhook.backends.procedural import ProceduralBackend
from genhook.media import Pixels
from genhook.media.procedural import render
from genhook.media.qc import measure
from genhook.presets import Presets

BASE: dict[str, Any] = {
    "prompt": "Handmade ceramic mug with steam, natural lifestyle scene, warm home interior",
    "subject": "Handmade Ceramic Mug",
    "palette": ["#f2e3d5", "#d9a441", "#7a9e7e", "#3d405b"],
    "lighting": "golden_hour",
    "width": 512,
    "height": 512,
    "seed": 42,
    "label": "procedural render · seed 42",
}


def draw(**changes: Any) -> Pixels:
    return render(**{**BASE, **changes})


def changed_fraction(a: Pixels, b: Pixels) -> float:
    return float(np.mean(np.any(a != b, axis=2)))


def test_same_arguments_give_identical_pixels() -> None:
    """Rendering the same arguments twice gives byte-identical arrays."""
    first, second = draw(), draw()
    assert first.tobytes() == second.tobytes()


def test_seed_changes_the_composition() -> None:
    """A different seed changes a large part of the image, not a few pixels."""
    assert changed_fraction(draw(seed=42), draw(seed=43)) > 0.2


def test_prompt_changes_the_composition() -> None:
    """A different prompt (same seed) changes a large part of the image."""
    other = draw(prompt="Handmade ceramic mug on a balcony at dusk, candid")
    assert changed_fraction(draw(), other) > 0.2


@pytest.mark.parametrize(
    ("width", "height"),
    [(256, 256), (1024, 1024), (1200, 630), (630, 1200), (1080, 1920), (333, 257), (16, 16)],
)
def test_shape_dtype_and_layout(width: int, height: int) -> None:
    """The result is a C-contiguous (height, width, 3) uint8 array for any aspect ratio."""
    pixels = draw(width=width, height=height)
    assert pixels.shape == (height, width, 3)
    assert pixels.dtype == np.uint8
    assert pixels.flags.c_contiguous


@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (1200, 630), (1080, 1920)])
def test_every_style_passes_quality_checks_by_a_wide_margin(
    presets: Presets, width: int, height: int
) -> None:
    """Every shipped style renders with grayscale std dev > 25 and Laplacian variance > 120."""
    for style in presets.styles.values():
        pixels = draw(palette=style.palette, lighting=style.lighting, width=width, height=height)
        m = measure(pixels)
        assert m.contrast > 25, (style.key, m.contrast)
        assert m.sharpness > 120, (style.key, m.sharpness)
        assert 20 < m.brightness < 235, (style.key, m.brightness)


def test_distinct_palettes_give_distinct_mean_colours(presets: Presets) -> None:
    """A dark palette and a light one give clearly different mean colours."""
    dark, light = presets.styles["luxury"], presets.styles["studio_white"]
    a = draw(palette=dark.palette, lighting=dark.lighting).reshape(-1, 3).mean(axis=0)
    b = draw(palette=light.palette, lighting=light.lighting).reshape(-1, 3).mean(axis=0)
    assert float(np.linalg.norm(a - b)) > 100


def test_each_lighting_setup_looks_different() -> None:
    """The eight named lighting setups all give different images for the same arguments."""
    names = ["softbox", "golden_hour", "diffuse", "rim", "hard_key", "window", "neon", "daylight"]
    images = {name: draw(lighting=name).tobytes() for name in names}
    assert len(set(images.values())) == len(names)


def test_unknown_lighting_falls_back_to_softbox() -> None:
    """An unknown lighting name renders exactly as softbox does."""
    assert draw(lighting="moonlight").tobytes() == draw(lighting="softbox").tobytes()


def test_label_only_touches_the_bottom_right_corner() -> None:
    """Changing the label changes pixels only in the bottom-right corner, where it is printed."""
    a, b = draw(label="procedural render · seed 42"), draw(label="x")
    rows, cols = np.nonzero(np.any(a != b, axis=2))
    assert rows.size > 0
    assert rows.min() > 0.9 * a.shape[0]
    assert cols.min() > 0.5 * a.shape[1]


def test_non_ascii_and_extreme_text_render() -> None:
    """Non-ASCII, empty and overlong subjects and prompts render without error."""
    for subject, prompt in [
        ("日本語のテキスト 😀 Ωmega", "東京 夜景, ネオン"),
        ("", ""),
        ("Supercalifragilisticexpialidocious" * 8, "word " * 400),
    ]:
        pixels = draw(subject=subject, prompt=prompt, width=640, height=360)
        assert pixels.shape == (360, 640, 3)
        assert measure(pixels).contrast > 10


def test_odd_palettes_are_tolerated() -> None:
    """Identical, invalid or too-short palettes still give a non-flat image."""
    for palette in (["#000000", "#000000"], ["#ffffff"] * 3, ["nonsense"], []):
        assert measure(draw(palette=palette)).contrast > 10


def test_1024_square_render_completes() -> None:
    """A 1024x1024 render completes with the expected shape (its speed is benchmarked elsewhere)."""
    pixels = draw(width=1024, height=1024)
    assert pixels.shape == (1024, 1024, 3)


def test_rejects_empty_size() -> None:
    """A zero or negative size is a ValueError."""
    with pytest.raises(ValueError, match="positive"):
        draw(width=0)


def test_words_of_the_prompt_are_never_printed() -> None:
    """Only the subject is set as text: a prompt word in a script no face has (Tibetan) is never
    reported missing, so it was never drawn; with no subject nothing of the prompt stands in."""
    backend, tibetan = ProceduralBackend(), "\u0f40\u0f41\u0f42"
    request = GenerationRequest(
        prompt=f"{tibetan} product photograph of kitchenware, clean",
        negative_prompt="",
        width=256,
        height=256,
        seed=1,
        model="procedural-v1",
        subject="Mug",
    )
    assert backend.generate(request).missing_glyphs == ()
    assert backend.generate(replace(request, subject="")).missing_glyphs == ()
    named = backend.generate(replace(request, subject=f"{tibetan} Mug"))
    assert named.missing_glyphs == tuple(tibetan), "the audit does see the subject's text"


def test_the_sandbox_runs_on_the_procedural_backends_model() -> None:
    from genhook.backends.procedural import ProceduralBackend
    from genhook.nodes.generate import SANDBOX_BACKEND, SANDBOX_MODEL

    assert (ProceduralBackend.name, ProceduralBackend.models[0]) == (SANDBOX_BACKEND, SANDBOX_MODEL)
