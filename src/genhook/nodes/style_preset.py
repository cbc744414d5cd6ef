"""``style_preset``: a style key looked up in ``presets/styles.yaml``, with an optional accent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from genhook.errors import ErrorCode, InvalidInput
from genhook.presets import Presets, StylePreset
from genhook.workflow.node import BaseNode, RunContext
from genhook.workflow.refs import find_refs


class StylePresetNode(BaseNode):
    """Outputs the preset, and its prompt and negative fragments as text."""

    kind = "style_preset"

    class Params(BaseModel):
        style: str
        accent: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{6}$")

    outputs: ClassVar[Mapping[str, Any]] = {
        "preset": StylePreset,
        "key": str,
        "prompt": str,
        "negative": str,
    }

    def check(self, params: Mapping[str, Any], presets: Presets) -> list[tuple[str, str]]:
        """A literal style key must name a preset."""
        style = params.get("style")
        if isinstance(style, str) and not list(find_refs(style)) and presets.style(style) is None:
            return [("style", f"unknown style preset {style!r}")]
        return []

    def run(self, name: str, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """An unknown key is invalid input on the field wired to ``style``.

        ``accent`` (a brand colour) leads the palette, so renders carry the brand.
        """
        preset = ctx.presets.style(params.style)
        if preset is None:
            raise InvalidInput(
                ErrorCode.UNKNOWN_STYLE,
                f"no style preset {params.style!r} (have: {', '.join(ctx.presets.styles)})",
                field="style",
            )
        if params.accent:
            palette = [params.accent, *[c for c in preset.palette if c != params.accent]]
            preset = preset.model_copy(update={"palette": palette})
        return {
            "preset": preset,
            "key": preset.key,
            "prompt": preset.prompt,
            "negative": ", ".join(preset.negative),
        }
