"""``export``: the images in every format its ``target_platform`` (a preset or bundle) asks for.

Given a generate node's ``renders`` (one image per aspect class), each preset is cut from the
image of its frame (:meth:`Renders.source_for`); given one image, every preset is cut from it.
Each crop is then checked: when it kept less than :data:`~genhook.media.saliency.MIN_KEPT` of
the source's salient region, the output is still delivered and the payload's
``quality_warning`` names it (check ``salient_region.{platform_code}``, node: this node).

Given video (a generate node of ``kind: video``), every preset must be a video preset
(``format: mp4``) and the other way round (``unknown_platform`` otherwise, naming the
trigger's field). Each source clip is decoded once and encoded for all of its presets
(:func:`genhook.media.video_export.export_video`: H.264 MP4, yuv420p, ``+faststart``, and a
JPEG poster per preset). Each MP4 is a :class:`VideoAsset` that carries its length, frame rate
and poster; the poster is stored as an asset of its own (its URL is the output's
``poster_url``) and is not an output itself.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from pydantic import BaseModel, ConfigDict

from genhook import metrics
from genhook.backends.base import GenerationResult
from genhook.errors import ErrorCode, GenhookError, InvalidInput
from genhook.media import Pixels
from genhook.media.aspect import crop_share
from genhook.media.export import Encoded, export_all, to_vips
from genhook.media.memory import release_free_memory
from genhook.media.saliency import MIN_KEPT, SalienceMap, kept_extent, salience
from genhook.media.similarity import phash
from genhook.nodes.metadata import cut_words, slug
from genhook.nodes.renders import Renders
from genhook.nodes.targets import resolve_targets, unknown_targets
from genhook.presets import PlatformPreset, Presets
from genhook.quality import FailedCheck
from genhook.workflow.node import (
    FILENAME_LIMIT,
    UNIQUE_SUFFIX_ROOM,
    BaseNode,
    QualityReport,
    RunContext,
)
from genhook.workflow.result import Asset, SeoText

if TYPE_CHECKING:
    from genhook.media.video_export import EncodedVideo, VideoTarget


class _Shared(TypedDict):
    """What an MP4 and its poster have in common."""

    width: int
    height: int
    platform_code: str
    alt_text: str
    caption: str


@dataclass(frozen=True)
class VideoAsset(Asset):
    """An encoded video: its length, frame rate, and its poster (stored as an asset too)."""

    duration_seconds: float = 0.0
    fps: float = 0.0
    poster: Asset | None = None


class Export(BaseNode):
    """Resizes, crops or pads and encodes per platform preset; names each file by convention."""

    kind = "export"

    class Params(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)

        image: Pixels | Renders
        platforms: str | list[str]
        seo: SeoText | None = None
        role: str = ""

    outputs: ClassVar[Mapping[str, Any]] = {"assets": list[Asset]}

    def check(self, params: Mapping[str, Any], presets: Presets) -> list[tuple[str, str]]:
        """Literal platform codes and bundles must exist."""
        unknown = unknown_targets(params.get("platforms"), presets)
        return [("platforms", f"unknown platform presets {unknown}")] if unknown else []

    def plan(
        self, name: str, raw: Mapping[str, Any], ctx: RunContext
    ) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """Dry run: every file it would write (platform, size, format, name, the image it is cut
        from and the share of each side the cut removes); no encoding."""
        params = self.Params.model_validate(raw)
        seo = self._seo(params, ctx)
        outputs = []
        for p in resolve_targets(params.platforms, ctx.presets):
            source = _source(params.image, p)
            width, height = _size(source)
            share = crop_share((width, height), (p.width, p.height)) if p.fit == "crop" else None
            outputs.append(
                {
                    "platform_code": p.code,
                    "width": p.width,
                    "height": p.height,
                    "format": p.format,
                    "fit": p.fit,
                    "source": _label(params.image, source),
                    "crop_share": (
                        {"x": round(share[0], 4), "y": round(share[1], 4)} if share else None
                    ),
                    "filename_suggestion": self._filename(
                        ctx, seo, params.role, p, p.width, p.height
                    ),
                    "asset_type": p.asset_type,
                    **({"crf": p.video_crf} if p.is_video else {}),
                }
            )
        return {"assets": []}, {"outputs": outputs}

    def run(self, name: str, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """Name: ``{stem}-{role}-{platform}-{w}x{h}.{ext}``, at most 100 characters, unique."""
        started = time.perf_counter()
        presets = resolve_targets(params.platforms, ctx.presets)
        seo = self._seo(params, ctx)
        if ctx.is_cancelled():
            raise GenhookError(ErrorCode.CANCELLED)
        video = _is_video(params.image)
        _refuse_other_kind(presets, "video" if video else "image")
        if video:
            assets = self._videos(params, ctx, presets, seo)
            metrics.export_seconds(time.perf_counter() - started)
            return {"assets": assets}
        groups: dict[int, tuple[Pixels, list[int]]] = {}
        for index, preset in enumerate(presets):
            pixels = _pixels(_source(params.image, preset))
            groups.setdefault(id(pixels), (pixels, []))[1].append(index)
        encoded: list[Encoded | None] = [None] * len(presets)
        hashes: list[str | None] = [None] * len(presets)
        failed: list[FailedCheck] = []
        for pixels, members in groups.values():
            made = export_all(to_vips(pixels), [presets[i] for i in members])
            made_from = phash(pixels)  # of the image cut from: every preset's output alike
            region: SalienceMap | None = None
            for index, out in zip(members, made, strict=True):
                encoded[index] = out
                hashes[index] = made_from
                if out.crop is None:
                    continue
                region = salience(pixels) if region is None else region
                kept = kept_extent(region, out.crop)
                metrics.qc("salient_region", kept >= MIN_KEPT)
                if kept < MIN_KEPT:
                    failed.append(_lost(presets[index], kept))
        if failed:
            checks = [f.to_dict() for f in failed]
            ctx.quality.append(QualityReport(name, False, 1, checks))
        assets = []
        for preset, made_one, made_hash in zip(presets, encoded, hashes, strict=True):
            assert made_one is not None  # every preset belongs to one group
            out = made_one
            assets.append(
                Asset(
                    data=out.data,
                    filename=self._filename(ctx, seo, params.role, preset, out.width, out.height),
                    media_type=out.media_type,
                    format=out.format,
                    width=out.width,
                    height=out.height,
                    platform_code=preset.code,
                    alt_text=seo.alt_text,
                    caption=seo.caption,
                    phash=made_hash,
                )
            )
        metrics.export_seconds(time.perf_counter() - started)
        release_free_memory()  # what the encodes freed, before the next job's renders
        return {"assets": assets}

    def _videos(
        self, params: Any, ctx: RunContext, presets: list[PlatformPreset], seo: SeoText
    ) -> list[Asset]:
        """Each source clip decoded once and encoded for its presets; every MP4 followed by
        its poster in the list (both are stored; the payload lists the MP4)."""
        from genhook.media.video_export import export_video

        renders: Renders = params.image
        names = [self._filename(ctx, seo, params.role, p, p.width, p.height) for p in presets]
        groups: dict[int, tuple[GenerationResult, list[int]]] = {}
        for index, preset in enumerate(presets):
            source = renders.source_for(preset)
            groups.setdefault(id(source), (source, []))[1].append(index)
        stems = {p.code: Path(n).stem for p, n in zip(presets, names, strict=True)}
        made: list[EncodedVideo | None] = [None] * len(presets)
        out_dir = Path(tempfile.mkdtemp(prefix="genhook-export-", dir=ctx.workdir))
        try:
            for source, members in groups.values():
                if ctx.is_cancelled():
                    raise GenhookError(ErrorCode.CANCELLED)
                assert source.video is not None  # _is_video: every render is a clip
                targets = [video_target(presets[i]) for i in members]
                encoded = export_video(
                    source.video.path, targets, out_dir, stem_for=lambda t: stems[t.code]
                )
                for index, one in zip(members, encoded, strict=True):
                    made[index] = one
            return [
                asset
                for preset, name, one in zip(presets, names, made, strict=True)
                for asset in self._video_assets(ctx, preset, name, one, seo)
            ]
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)

    @staticmethod
    def _video_assets(
        ctx: RunContext, preset: PlatformPreset, name: str, one: EncodedVideo | None, seo: SeoText
    ) -> tuple[VideoAsset, Asset]:
        """The MP4 of one preset and its poster, read into memory (the files are removed)."""
        assert one is not None  # every preset belongs to one group
        suffix = one.poster_path.suffix.lstrip(".").lower() or "jpg"
        poster_format = "jpeg" if suffix in ("jpg", "jpeg") else suffix
        shared: _Shared = {
            "width": one.width,
            "height": one.height,
            "platform_code": preset.code,
            "alt_text": seo.alt_text,
            "caption": seo.caption,
        }
        poster = Asset(
            data=one.poster_path.read_bytes(),
            filename=ctx.reserve_filename(f"{Path(name).stem}-poster", suffix),
            media_type=f"image/{poster_format}",
            format=poster_format,
            **shared,
        )
        clip = VideoAsset(
            data=one.path.read_bytes(),
            filename=name,
            media_type=preset.media_type,
            format=preset.format,
            asset_type="video",
            duration_seconds=round(one.duration_seconds, 3),
            fps=round(one.fps, 3),
            poster=poster,
            phash=one.phash,
            **shared,
        )
        return clip, poster

    @staticmethod
    def _seo(params: Any, ctx: RunContext) -> SeoText:
        seo: SeoText = params.seo or SeoText("", "", slug(ctx.job_id))
        return seo

    @staticmethod
    def _filename(
        ctx: RunContext, seo: SeoText, role: str, preset: PlatformPreset, width: int, height: int
    ) -> str:
        tail = slug(f"{role} {preset.code} {width}x{height}", limit=40)
        # the subject's words, then "-{tail}", room for a "-N" suffix, then ".{extension}"
        room = FILENAME_LIMIT - len(tail) - 1 - UNIQUE_SUFFIX_ROOM - len(preset.extension) - 1
        stem = f"{cut_words(seo.stem, room)}-{tail}".strip("-")
        return ctx.reserve_filename(stem, preset.extension)


def _source(image: Pixels | Renders, preset: PlatformPreset) -> Pixels | GenerationResult:
    return image.source_for(preset) if isinstance(image, Renders) else image


def _pixels(source: Pixels | GenerationResult) -> Pixels:
    return source.pixels if isinstance(source, GenerationResult) else source


def _size(source: Pixels | GenerationResult) -> tuple[int, int]:
    height, width = _pixels(source).shape[:2]
    return width, height


def _label(image: Pixels | Renders, source: Pixels | GenerationResult) -> str:
    return (
        image.label(source)
        if isinstance(source, GenerationResult) and isinstance(image, Renders)
        else "image"
    )


def _lost(preset: PlatformPreset, kept: float) -> FailedCheck:
    """The failed salience check of one output."""
    return FailedCheck(
        f"salient_region.{preset.code}",
        round(kept, 4),
        MIN_KEPT,
        ">=",
        round((MIN_KEPT - kept) / MIN_KEPT, 4),
    )


def video_target(preset: PlatformPreset) -> VideoTarget:
    """The encoder's view of a video preset."""
    from genhook.media.video_export import VideoTarget

    return VideoTarget(
        code=preset.code,
        width=preset.width,
        height=preset.height,
        fit=preset.fit,
        crf=preset.video_crf,
        background=preset.background,
        poster_format="jpeg",
    )


def _is_video(image: Pixels | Renders) -> bool:
    """Whether the export is given clips (a video generate node's renders)."""
    return isinstance(image, Renders) and all(r.video is not None for r in image.results)


def _refuse_other_kind(presets: list[PlatformPreset], kind: str) -> None:
    """Video presets take clips and image presets images: the others are the trigger's
    (or the template's) mistake, named as the ``platforms`` they came from."""
    wrong = [p.code for p in presets if p.asset_type != kind]
    if wrong:
        other = "video" if kind == "image" else "image"
        raise InvalidInput(
            ErrorCode.UNKNOWN_PLATFORM,
            f"{other} presets {wrong} cannot be made from this workflow's {kind} output",
            field="platforms",
        )
