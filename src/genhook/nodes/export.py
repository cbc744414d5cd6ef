"""``export``: the image in every format its ``target_platform`` (a preset or bundle) asks for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from genhook.errors import ErrorCode, GenhookError, InvalidInput
from genhook.media import Pixels
from genhook.media.export import export_all, to_vips
from genhook.nodes.metadata import slug
from genhook.presets import PlatformPreset, Presets
from genhook.workflow.node import BaseNode, RunContext
from genhook.workflow.refs import find_refs
from genhook.workflow.result import Asset, SeoText


class Export(BaseNode):
    """Resizes, crops or pads and encodes per platform preset; names each file by convention."""

    kind = "export"

    class Params(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)

        image: Pixels
        platforms: str | list[str]
        seo: SeoText | None = None
        role: str = ""

    outputs: ClassVar[Mapping[str, Any]] = {"assets": list[Asset]}

    def check(self, params: Mapping[str, Any], presets: Presets) -> list[tuple[str, str]]:
        """Literal platform codes and bundles must exist."""
        value = params.get("platforms")
        targets = value if isinstance(value, list) else [value]
        unknown = [
            t
            for t in targets
            if isinstance(t, str)
            and not list(find_refs(t))
            and presets.resolve_platforms(t) is None
        ]
        return [("platforms", f"unknown platform presets {unknown}")] if unknown else []

    def plan(
        self, name: str, raw: Mapping[str, Any], ctx: RunContext
    ) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """Dry run: every file it would write (platform, size, format, name); no encoding."""
        params = self.Params.model_validate(raw)
        seo = self._seo(params, ctx)
        outputs = [
            {
                "platform_code": p.code,
                "width": p.width,
                "height": p.height,
                "format": p.format,
                "fit": p.fit,
                "filename_suggestion": self._filename(ctx, seo, params.role, p, p.width, p.height),
            }
            for p in self._presets(params, ctx)
        ]
        return {"assets": []}, {"outputs": outputs}

    def run(self, name: str, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """Name: ``{stem}-{role}-{platform}-{w}x{h}.{ext}``, at most 100 characters, unique."""
        presets = self._presets(params, ctx)
        seo = self._seo(params, ctx)
        if ctx.is_cancelled():
            raise GenhookError(ErrorCode.CANCELLED)
        encoded_all = export_all(to_vips(params.image), presets)
        assets = [
            Asset(
                data=encoded.data,
                filename=self._filename(
                    ctx, seo, params.role, preset, encoded.width, encoded.height
                ),
                media_type=encoded.media_type,
                format=encoded.format,
                width=encoded.width,
                height=encoded.height,
                platform_code=preset.code,
                alt_text=seo.alt_text,
                caption=seo.caption,
            )
            for preset, encoded in zip(presets, encoded_all, strict=True)
        ]
        return {"assets": assets}

    @staticmethod
    def _presets(params: Any, ctx: RunContext) -> list[PlatformPreset]:
        targets = params.platforms if isinstance(params.platforms, list) else [params.platforms]
        presets: list[PlatformPreset] = []
        for target in targets:
            found = ctx.presets.resolve_platforms(target)
            if found is None:
                raise InvalidInput(
                    ErrorCode.UNKNOWN_PLATFORM,
                    f"no platform preset or bundle {target!r}",
                    field="platforms",
                )
            presets += [p for p in found if p not in presets]
        return presets

    @staticmethod
    def _seo(params: Any, ctx: RunContext) -> SeoText:
        seo: SeoText = params.seo or SeoText("", "", slug(ctx.job_id))
        return seo

    @staticmethod
    def _filename(
        ctx: RunContext, seo: SeoText, role: str, preset: PlatformPreset, width: int, height: int
    ) -> str:
        tail = slug(f"{role} {preset.code} {width}x{height}", limit=40)
        stem = f"{seo.stem[: 100 - len(tail) - 6].rstrip('-')}-{tail}".strip("-")
        return ctx.reserve_filename(stem, preset.extension)
