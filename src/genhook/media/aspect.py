"""Aspect classes: the few frames a generate node composes for, and which preset is cut from which.

A 2048x2048 square cut to 9:16 loses 44 % of its width, and no smart crop keeps a title that
spans it. So a workflow generates one image per *aspect class* that its presets need, each
composed for its own frame, and cuts every preset from its nearest class. The classes:

=========  =======  =====================================================================
class      ratio    shipped presets cut from it (share of one side a crop removes)
=========  =======  =====================================================================
tall       9:16     instagram_story (0)
portrait   8:11     instagram_portrait (9.1 % of the height), pinterest_pin (8.3 % of the
                    width)
square     1:1      instagram_feed, shopify_product, amazon_main, avatar (0)
landscape  4:3      etsy_listing (6.3 % of the width)
wide       37:20    x_post, web_hero, web_hero_avif, youtube_thumbnail, slide_16x9 (3.9 % of
                    the width); facebook_link, og_image (2.9 % of the height), linkedin_post
                    (3.3 % of the height)
banner     3:1      email_banner (0)
=========  =======  =====================================================================

"Nearest" is measured on a log scale of width / height, so a class is as near to a ratio
twice as wide as to one twice as tall. A crop from a class of ratio ``c`` to a preset of ratio
``p`` removes ``1 - min(p, c) / max(p, c)`` of one side and nothing of the other:
:data:`MAX_CROP_SHARE` (10 %) bounds it for every shipped preset (a test holds the preset files
to it). The generator keeps the subject and title inside the frame less that share on each side
(the *safe area*, :class:`Frame`), so that no placement of the crop can cut them.

Presets that say ``on_white`` get their own frame of the class, rendered (or asked for) on pure
white, so that every pixel around the product is (255, 255, 255).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from genhook.presets import PlatformPreset

CLASSES: dict[str, Fraction] = {
    "tall": Fraction(9, 16),
    "portrait": Fraction(8, 11),
    "square": Fraction(1, 1),
    "landscape": Fraction(4, 3),
    "wide": Fraction(37, 20),
    "banner": Fraction(3, 1),
}
"""Aspect class name -> width / height, narrowest first."""
MAX_CROP_SHARE = 0.10
"""The most of one side that cutting a shipped preset from its nearest class removes."""
MAX_SIDE = 4096
"""The longest side a class image is planned at (the procedural backend's limit)."""


def ratio_text(ratio: Fraction) -> str:
    """``9:16``, ``1:1``, ``37:20``."""
    return f"{ratio.numerator}:{ratio.denominator}"


def nearest_class(width: int, height: int, among: Sequence[str] | None = None) -> str:
    """The class (of ``among``, default all) whose ratio is nearest ``width / height``."""
    target = math.log(width / height)
    names = list(among) if among else list(CLASSES)
    return min(names, key=lambda name: (abs(math.log(CLASSES[name]) - target), name))


def crop_share(source: tuple[int, int] | float, target: tuple[int, int]) -> tuple[float, float]:
    """(share of the width, share of the height) that covering ``target`` (w, h) removes from a
    source of size ``source`` (or of that width / height ratio). One of the two is 0."""
    src = source if isinstance(source, float | Fraction) else source[0] / source[1]
    dst = target[0] / target[1]
    if dst < src:  # the target is narrower: the sides of the source go
        return 1.0 - dst / float(src), 0.0
    return 0.0, 1.0 - float(src) / dst


@dataclass(frozen=True)
class Frame:
    """What one generated image is composed for: its class, backdrop and safe area.

    ``safe_x`` and ``safe_y`` are the shares of the width and the height that a crop of this
    image may remove (from either side, wherever the crop lands): the subject and any text must
    stay that far inside the frame.
    """

    aspect: str
    on_white: bool = False
    safe_x: float = 0.0
    safe_y: float = 0.0

    @property
    def key(self) -> str:
        """``square`` or, on white, ``square-white``."""
        return f"{self.aspect}-white" if self.on_white else self.aspect

    @property
    def ratio(self) -> Fraction:
        return CLASSES[self.aspect]


@dataclass(frozen=True)
class PlannedFrame:
    """A frame to generate, at a pixel size, and the presets that will be cut from it."""

    frame: Frame
    width: int
    height: int
    presets: tuple[PlatformPreset, ...]


def frame_of(preset: PlatformPreset) -> tuple[str, bool]:
    """(nearest class, on white) of a preset."""
    return nearest_class(preset.width, preset.height), preset.on_white


def plan_frames(presets: Sequence[PlatformPreset], area: int) -> list[PlannedFrame]:
    """One frame per (class, on white) that ``presets`` need, in order of first use.

    Each is about ``area`` pixels, shaped to its class, enlarged where a preset needs more
    pixels (so that no output is upscaled), at most :data:`MAX_SIDE` on its longer side.
    """
    groups: dict[tuple[str, bool], list[PlatformPreset]] = {}
    for preset in presets:
        groups.setdefault(frame_of(preset), []).append(preset)
    planned = []
    for (aspect, on_white), members in groups.items():
        ratio = CLASSES[aspect]
        shares = [crop_share(float(ratio), (p.width, p.height)) for p in members]
        frame = Frame(
            aspect,
            on_white,
            safe_x=round(max(s[0] for s in shares), 4),
            safe_y=round(max(s[1] for s in shares), 4),
        )
        width, height = class_size(ratio, area, members)
        planned.append(PlannedFrame(frame, width, height, tuple(members)))
    return planned


def class_size(ratio: Fraction, area: int, presets: Sequence[PlatformPreset]) -> tuple[int, int]:
    """A ``ratio`` frame of about ``area`` pixels, grown to cover every preset, capped."""
    r = float(ratio)
    need_w = float(max((p.width for p in presets), default=0))
    need_h = float(max((p.height for p in presets), default=0))
    width = max(math.sqrt(area * r), need_w, need_h * r)
    width = min(width, float(MAX_SIDE), MAX_SIDE * r)
    w = max(16, round(width))
    return w, max(16, round(w / r))
