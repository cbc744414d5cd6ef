"""SEO filenames: a long name loses whole words from its end, never from its middle."""

from __future__ import annotations

import pytest

from genhook.engine import Engine
from genhook.nodes.metadata import cut_words, slug
from genhook.workflow.inputs import validate_input

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
