"""``metadata``: alt text, caption and the SEO filename stem from templates over the trigger.

Filenames follow one convention: a lowercase ASCII slug (transliterated by python-slugify), built
from the template (typically external id and subject); the export node appends the platform and
size, caps the name at 100 characters and keeps it unique within the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from slugify import slugify

from genhook.nodes.templating import check_template_params, render_text
from genhook.presets import Presets
from genhook.workflow.node import BaseNode, RunContext
from genhook.workflow.result import SeoText

ALT_TEXT_LIMIT = 125  # what screen readers and image search expect
CAPTION_LIMIT = 2200  # the longest caption the common platforms take
STEM_LIMIT = 70  # leaves room for platform, size and extension within 100 characters


def cut_words(slug_text: str, limit: int) -> str:
    """The first whole words (hyphen-separated) of ``slug_text`` that fit in ``limit``
    characters; words go from the end, never from the middle. A first word longer than
    ``limit`` on its own is cut, since nothing whole fits."""
    if len(slug_text) <= limit:
        return slug_text
    kept = slug_text[: limit + 1].rsplit("-", 1)[0] if "-" in slug_text[: limit + 1] else ""
    return kept.rstrip("-") or slug_text[:limit]


def slug(text: str, limit: int = STEM_LIMIT) -> str:
    """Lowercase ASCII words joined by hyphens, cut to ``limit`` by dropping whole words from
    the end (python-slugify's own ``word_boundary`` skips a long word and keeps later ones,
    which reads as words lost from the middle)."""
    return cut_words(str(slugify(text, lowercase=True)), limit)


class Metadata(BaseNode):
    """Renders the SEO text once per subject; every exported format shares it."""

    kind = "metadata"

    class Params(BaseModel):
        alt_text: str
        caption: str
        filename: str
        vars: dict[str, Any] = {}
        alt_text_limit: int = Field(default=ALT_TEXT_LIMIT, ge=20, le=1000)

    outputs: ClassVar[Mapping[str, Any]] = {"seo": SeoText}

    def check(self, params: Mapping[str, Any], presets: Presets) -> list[tuple[str, str]]:
        """The three templates compile and use only ``input`` and the declared ``vars``."""
        return check_template_params(params, ("alt_text", "caption", "filename"))

    def run(self, name: str, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """Render; the stem falls back to the job id if the template renders no letters."""
        variables = {**params.vars, "input": ctx.trigger}
        stem = slug(render_text(params.filename, variables, limit=400)) or slug(ctx.job_id)
        return {
            "seo": SeoText(
                alt_text=render_text(params.alt_text, variables, limit=params.alt_text_limit),
                caption=render_text(params.caption, variables, limit=CAPTION_LIMIT),
                stem=stem,
            )
        }
