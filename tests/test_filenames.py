"""SEO filenames: a long name loses whole words from its end, never from its middle."""

from __future__ import annotations

import pytest

from genhook.engine import Engine
from genhook.nodes.export import Export
from genhook.nodes.metadata import cut_words, slug
from genhook.workflow.inputs import validate_input
from genhook.workflow.result import SeoText

LONG = (
    "Amélie Merino Wool Crewneck Sweater with Extraordinarily Long Descriptive Name "
    "in Forest Green, Size Medium"
)


def _is_word_prefix(short: str, full: str) -> bool:
    """``short`` is the first few whole words of the slug ``full``."""
    words, all_words = short.split("-"), full.split("-")
    return words == all_words[: len(words)]


@pytest.mark.parametrize(
    "text",
    [
        LONG,
        "a " + "x" * 80 + " b",  # a word too long to fit must not be skipped over
        "SKU-123 " + "supercalifragilistic " * 6,
    ],
)
def test_slug_cuts_whole_words_from_the_end(text: str) -> None:
    full = slug(text, limit=10_000)
    short = slug(text)
    assert 0 < len(short) <= 70
    assert _is_word_prefix(short, full), short


def test_cut_words_keeps_short_text_and_cuts_a_lone_long_word() -> None:
    assert cut_words("linen-shirt", 70) == "linen-shirt"
    assert cut_words("linen-shirt-blue", 11) == "linen-shirt"
    assert cut_words("linen-shirt-blue", 12) == "linen-shirt"
    assert cut_words("x" * 90, 70) == "x" * 70  # nothing whole fits: the one word is cut
    assert cut_words("", 70) == ""


def test_exported_names_keep_whole_words_and_stay_unique(engine: Engine) -> None:
    wf = engine.workflow("product-image")
    trigger = validate_input(
        wf,
        {
            "product_id": "SKU-123",
            "product_name": LONG,
            "target_style": "studio_white",
            "target_platform": "ecommerce_pack",
        },
    )
    outputs = engine.plan(wf, trigger)["outputs"]
    names = [o["filename_suggestion"] for o in outputs]
    assert len(names) > 1
    assert len(set(names)) == len(names)
    full = slug(f"SKU-123 {LONG}", limit=10_000)
    for output, name in zip(outputs, names, strict=True):
        assert len(name) <= 100, name
        stem = name.rsplit(".", 1)[0]
        tail = slug(f"{output['platform_code']} {output['width']}x{output['height']}")
        assert stem.endswith(f"-{tail}"), name
        product = stem.removesuffix(f"-{tail}")
        assert len(product.split("-")) >= 3, name
        assert _is_word_prefix(product, full), name


def test_a_repeated_long_name_keeps_whole_words_and_its_size(engine: Engine) -> None:
    """The same long subject exported again and again to one preset: every name is unique, at
    most 100 characters, ends with the preset's tail and a ``-N`` counter, and its subject part
    is whole words from the start (the counter's room is kept, so no word is cut for it)."""
    wf = engine.workflow("product-image")
    ctx = engine.context(wf, {}, job_id="job_filenames")
    preset = engine.presets.platforms["instagram_feed"]
    full = slug(f"SKU-123 {LONG} {LONG}", limit=10_000)
    seo = SeoText("alt", "caption", full)
    tail = slug(f"main {preset.code} {preset.width}x{preset.height}")
    names = [
        Export._filename(ctx, seo, "main", preset, preset.width, preset.height) for _ in range(12)
    ]
    assert len(set(names)) == 12
    for n, name in enumerate(names, start=1):
        assert len(name) <= 100, name
        stem, _, extension = name.rpartition(".")
        assert extension == preset.extension
        counter = "" if n == 1 else f"-{n}"
        assert stem.endswith(f"-{tail}{counter}"), name
        subject = stem.removesuffix(f"-{tail}{counter}")
        assert len(subject.split("-")) >= 3 and _is_word_prefix(subject, full), name


def test_reserve_filename_cuts_a_long_stem_at_a_word(engine: Engine) -> None:
    """A stem longer than the limit loses whole words from its end, also once a counter is
    needed, instead of a word cut in the middle."""
    ctx = engine.context(engine.workflow("product-image"), {}, job_id="job_reserve")
    stem = slug(f"{LONG} {LONG}", limit=10_000)
    first = ctx.reserve_filename(stem, "jpeg", limit=60)
    second = ctx.reserve_filename(stem, "jpeg", limit=60)
    assert first != second and second.endswith("-2.jpeg")
    for name, counter in ((first, ""), (second, "-2")):
        assert len(name) <= 60, name
        assert _is_word_prefix(name.removesuffix(f"{counter}.jpeg"), stem), name
