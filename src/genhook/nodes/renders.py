"""The images a generate node made: one per frame (aspect class and backdrop), or one for all.

A generate node in ``aspect_classes: per_class`` mode makes one image per frame that its presets
need (see :mod:`genhook.media.aspect`); a quality check keeps the set together; the export node
cuts each preset from :meth:`Renders.source_for` it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from genhook.backends.base import GenerationResult
from genhook.presets import PlatformPreset


@dataclass(frozen=True)
class Renders:
    """Generation results in frame order; the first is the primary (its prompt and seed are the
    payload's)."""

    results: tuple[GenerationResult, ...]

    def __post_init__(self) -> None:
        if not self.results:
            raise ValueError("Renders needs at least one generation result")

    @property
    def primary(self) -> GenerationResult:
        return self.results[0]

    def source_for(self, preset: PlatformPreset) -> GenerationResult:
        """The image to cut ``preset`` from: one on the preset's backdrop if there is one, then
        the one whose actual pixel ratio is nearest the preset's (what an engine returned,
        which need not be what was asked for)."""
        same = [r for r in self.results if _on_white(r) == preset.on_white] or list(self.results)
        target = math.log(preset.width / preset.height)
        return min(same, key=lambda r: abs(math.log(_ratio(r)) - target))

    def label(self, result: GenerationResult) -> str:
        """The frame's key (``square``, ``square-white``), or ``image`` for a frameless one."""
        frame = result.request.frame
        return frame.key if frame is not None else "image"


def _on_white(result: GenerationResult) -> bool:
    return result.request.frame is not None and result.request.frame.on_white


def _ratio(result: GenerationResult) -> float:
    height, width = result.pixels.shape[:2]
    return float(width) / float(height)
