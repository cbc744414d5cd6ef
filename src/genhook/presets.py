"""Style and platform presets, from ``presets/styles.yaml`` and ``presets/platforms.yaml``."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from genhook.errors import TemplateError, TemplateProblem
from genhook.paths import presets_dir

ImageFormat = Literal["jpeg", "webp", "png", "avif"]
VideoFormat = Literal["mp4"]
VIDEO_FORMATS = ("mp4",)
DEFAULT_CRF = 23
"""x264's constant rate factor for a video preset that names none (lower: better, larger)."""

_HEX = r"^#[0-9a-fA-F]{6}$"


class StylePreset(BaseModel):
    """A look: words for the prompt, a palette, lighting and camera, terms to avoid."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    label: str
    prompt: str
    palette: list[str] = Field(min_length=2)
    lighting: str
    camera: str
    negative: list[str] = []

    @field_validator("palette")
    @classmethod
    def _hex_colours(cls, value: list[str]) -> list[str]:
        import re

        for colour in value:
            if not re.match(_HEX, colour):
                raise ValueError(f"palette colour {colour!r} is not #rrggbb")
        return value


class PlatformPreset(BaseModel):
    """One export target: exact pixel size, how to fit the image, encoding and quality.

    ``format: mp4`` makes it a video preset: H.264 in MP4 at ``crf`` (default
    :data:`DEFAULT_CRF`), with a JPEG poster; ``quality`` then applies to the poster."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    label: str
    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)
    fit: Literal["crop", "pad"] = "crop"
    format: ImageFormat | VideoFormat = "jpeg"
    quality: int = Field(default=85, ge=1, le=100)
    crf: int | None = Field(default=None, ge=0, le=51)
    """Video presets only: x264's constant rate factor (0 lossless .. 51 worst)."""
    background: str = Field(default="#ffffff", pattern=_HEX)
    on_white: bool = False
    """The product alone on pure white (marketplace main images): generated on white, and every
    pixel around the product exported as (255, 255, 255). Needs ``background: "#ffffff"``."""

    @model_validator(mode="after")
    def _white_backdrop(self) -> PlatformPreset:
        if self.on_white and self.background.lower() != "#ffffff":
            raise ValueError("on_white needs background #ffffff")
        if self.crf is not None and not self.is_video:
            raise ValueError(f"crf applies to video presets (format: mp4), not {self.format}")
        if self.is_video and self.on_white:
            raise ValueError("on_white applies to image presets, not video")
        if self.is_video and (self.width % 2 or self.height % 2):
            raise ValueError("a video preset's width and height are even (yuv420p)")
        return self

    @property
    def is_video(self) -> bool:
        """A video preset (``format: mp4``)."""
        return self.format in VIDEO_FORMATS

    @property
    def asset_type(self) -> Literal["image", "video"]:
        """What this preset makes: ``video`` for mp4, else ``image``."""
        return "video" if self.is_video else "image"

    @property
    def video_crf(self) -> int:
        """The CRF a video preset encodes at."""
        return DEFAULT_CRF if self.crf is None else self.crf

    @property
    def extension(self) -> str:
        """The file extension of this preset's format."""
        return "jpg" if self.format == "jpeg" else self.format

    @property
    def media_type(self) -> str:
        """The Content-Type of this preset's format."""
        return f"video/{self.format}" if self.is_video else f"image/{self.format}"


class Presets(BaseModel):
    """All styles, platforms and bundles of platforms."""

    model_config = ConfigDict(frozen=True)

    styles: dict[str, StylePreset]
    platforms: dict[str, PlatformPreset]
    bundles: dict[str, list[str]]

    @cached_property
    def platform_targets(self) -> list[str]:
        """The ``target_platform`` values of an image workflow (``x-enum-from: platforms``):
        image presets, then bundles of them (video presets are :attr:`video_targets`)."""
        return self.image_targets

    @cached_property
    def image_targets(self) -> list[str]:
        """The ``target_platform`` values that make images: image presets, then bundles of
        them."""
        return self._targets(video=False)

    @cached_property
    def video_targets(self) -> list[str]:
        """The ``target_platform`` values that make video: video presets, then bundles of
        them."""
        return self._targets(video=True)

    def _targets(self, *, video: bool) -> list[str]:
        codes = [c for c, p in self.platforms.items() if p.is_video == video]
        bundles = [
            name
            for name, members in self.bundles.items()
            if all(self.platforms[m].is_video == video for m in members)
        ]
        return [*codes, *bundles]

    def style(self, key: str) -> StylePreset | None:
        """The style named ``key``, or None."""
        return self.styles.get(key)

    def resolve_platforms(self, target: str) -> list[PlatformPreset] | None:
        """The presets a ``target_platform`` value selects (a bundle expands); None if unknown."""
        if target in self.platforms:
            return [self.platforms[target]]
        if target in self.bundles:
            return [self.platforms[code] for code in self.bundles[target]]
        return None


def _read(path: Path) -> dict[str, object]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = (
            exc.problem_mark.line + 1 if hasattr(exc, "problem_mark") and exc.problem_mark else None
        )
        raise TemplateError(str(path), [TemplateProblem("(file)", line, str(exc))]) from exc
    if not isinstance(data, dict):
        raise TemplateError(str(path), [TemplateProblem("(file)", 1, "expected a mapping")])
    return data


def load_presets(directory: Path | None = None) -> Presets:
    """Load and check the preset files; any problem raises :class:`TemplateError`."""
    directory = directory or presets_dir()
    styles_path, platforms_path = directory / "styles.yaml", directory / "platforms.yaml"
    raw_styles = _read(styles_path).get("styles") or {}
    raw_platforms = _read(platforms_path)
    problems: list[TemplateProblem] = []
    styles: dict[str, StylePreset] = {}
    platforms: dict[str, PlatformPreset] = {}
    assert isinstance(raw_styles, dict)
    for key, body in raw_styles.items():
        try:
            styles[key] = StylePreset.model_validate({"key": key, **(body or {})})
        except ValidationError as exc:
            problems.append(TemplateProblem(f"styles.{key}", None, _first(exc)))
    plat = raw_platforms.get("platforms") or {}
    assert isinstance(plat, dict)
    for code, body in plat.items():
        try:
            platforms[code] = PlatformPreset.model_validate({"code": code, **(body or {})})
        except ValidationError as exc:
            problems.append(TemplateProblem(f"platforms.{code}", None, _first(exc)))
    bundles_raw = raw_platforms.get("bundles") or {}
    assert isinstance(bundles_raw, dict)
    bundles: dict[str, list[str]] = {}
    for name, members in bundles_raw.items():
        if name in plat:
            problems.append(TemplateProblem(f"bundles.{name}", None, "bundle shadows a platform"))
        missing = [m for m in members if m not in plat]
        if missing:
            problems.append(
                TemplateProblem(f"bundles.{name}", None, f"unknown platforms {missing}")
            )
        kinds = {platforms[m].asset_type for m in members if m in platforms}
        if len(kinds) > 1:
            problems.append(
                TemplateProblem(
                    f"bundles.{name}",
                    None,
                    "a bundle is all image presets or all video presets (format: mp4), not both",
                )
            )
        bundles[name] = list(members)
    if problems:
        raise TemplateError(str(directory), problems)
    return Presets(styles=styles, platforms=platforms, bundles=bundles)


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])
