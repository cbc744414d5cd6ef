"""The procedural renderer's stand-in products: each reads as a product (a mug has a body and a
handle), the subject's own kind is drawn, and every kind stays inside its stated envelope."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from genhook.media.procedural.hero import HEROES, Hero, hero_for
from genhook.media.procedural.lighting import named_light
from genhook.media.procedural.palette import parse_palette, scheme
from genhook.media.procedural.shading import Painter

SIDE = 600


def silhouette(kind: str) -> tuple[np.ndarray, Hero]:
    """``kind`` drawn alone on white, and the mask of the pixels it covered."""
    img = Image.new("RGB", (SIDE, SIDE), (255, 255, 255))
    sc = scheme(
        parse_palette(["#f5f5f5", "#dddddd", "#2a4d69", "#e0a526"]), np.random.default_rng(1)
    )
    height = 0.5 * SIDE
    ratio = HEROES[kind][0]
    hero = Hero(kind, SIDE / 2, 0.75 * SIDE, height, ratio * height)
    HEROES[kind][1](Painter(img, named_light("softbox", mirror=False), (255, 255, 255)), hero, sc)
    return np.any(np.asarray(img) != 255, axis=2), hero


@pytest.mark.parametrize("kind", list(HEROES))
def test_every_kind_stays_in_its_envelope(kind: str) -> None:
    """Within 0.65 widths of the centre, 1.05 heights above the base, 0.1 widths below it (what
    the layouts and the packshot sizing rely on), and filling a good part of it."""
    drawn, hero = silhouette(kind)
    rows, cols = np.nonzero(drawn)
    assert cols.min() >= hero.cx - 0.65 * hero.width - 1
    assert cols.max() <= hero.cx + 0.65 * hero.width + 1
    assert rows.min() >= hero.base - 1.05 * hero.height - 1
    assert rows.max() <= hero.base + 0.1 * hero.width + 1
    assert rows.max() - rows.min() > 0.7 * hero.height


def test_mug_has_a_handle_with_a_hole_and_an_open_top() -> None:
    """The mug's outline encloses background (the handle's loop), sticks out to one side beyond
    the body, and its top is an ellipse (a rim), not a flat or pointed roof."""
    drawn, hero = silhouette("mug")
    mask = drawn.astype(np.uint8)
    _, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    holes = [h for h in hierarchy[0] if h[3] >= 0]
    assert holes, "the handle loop leaves a hole"
    widths = mask.sum(axis=1)
    body_row = int(hero.base - 0.05 * hero.height)
    assert widths.max() > 1.15 * widths[body_row], "the handle sticks out beyond the body"
    top = int(np.nonzero(widths)[0].min())
    rim = [int(widths[top + k]) for k in (1, 4, 10)]
    assert rim[0] < rim[1] < rim[2], "the top widens downward like an ellipse's upper half"


@pytest.mark.parametrize(
    ("subject", "kind"),
    [
        ("Handmade Ceramic Mug", "mug"),
        ("Espresso cups, set of 2", "mug"),
        ("Tasse à café", "mug"),
        ("抹茶マグ", "mug"),
        ("Olive Oil Bottle", "bottle"),
        ("Soy Candle", "jar"),
        ("Hand Lotion Tube", "tube"),
    ],
)
def test_the_subject_picks_its_kind(subject: str, kind: str) -> None:
    """A subject that names a product kind gets that kind, whatever the seed."""
    for seed in range(5):
        assert hero_for(subject, "", np.random.default_rng(seed)) == kind


def test_other_subjects_draw_a_kind_from_the_seed() -> None:
    """Subjects naming no kind get a kind from the random draw, and every kind can come up."""
    kinds = {hero_for("Linen Shirt", "studio shot", np.random.default_rng(s)) for s in range(60)}
    assert kinds == set(HEROES)
