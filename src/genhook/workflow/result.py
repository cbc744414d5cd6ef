"""What one run of a workflow produces, before assets are stored and a payload is built."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from genhook.backends.base import GenerationResult
from genhook.workflow.node import QualityReport


@dataclass(frozen=True)
class SeoText:
    """Alt text, caption and the filename stem (a slug) that every output of a subject shares."""

    alt_text: str
    caption: str
    stem: str


@dataclass(frozen=True)
class Asset:
    """One encoded output in memory, with its SEO fields and unique filename."""

    data: bytes
    filename: str
    media_type: str
    format: str
    width: int
    height: int
    platform_code: str
    alt_text: str
    caption: str
    asset_type: Literal["image", "video"] = "image"
    phash: str | None = None
    """The perceptual hash of the image it was cut from (images only; see the payload's)."""

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class RunResult:
    """The assets, SEO text and generation ledger of one successful run."""

    assets: list[Asset]
    seo: SeoText | None
    generations: list[GenerationResult]
    delivered: list[GenerationResult]
    quality: list[QualityReport] = field(default_factory=list)

    @property
    def credit_cost(self) -> float:
        """Credits spent on every generation of the run, quality-check retries included."""
        return round(sum(g.credit_cost for g in self.generations), 6)
