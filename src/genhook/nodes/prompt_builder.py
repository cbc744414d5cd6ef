"""``prompt_builder``: the prompt and negative prompt from sandboxed Jinja2 templates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from genhook.nodes.templating import check_template_params, render_text
from genhook.presets import Presets
from genhook.workflow.node import BaseNode, RunContext


class PromptBuilder(BaseNode):
    """Renders ``template`` and ``negative_template`` with ``vars`` and the trigger as ``input``."""

    kind = "prompt_builder"

    class Params(BaseModel):
        template: str
        negative_template: str = ""
        vars: dict[str, Any] = {}
        max_length: int = Field(default=1000, ge=20, le=10000)

    outputs: ClassVar[Mapping[str, Any]] = {"prompt": str, "negative_prompt": str}

    def check(self, params: Mapping[str, Any], presets: Presets) -> list[tuple[str, str]]:
        """Both templates compile and use only ``input`` and the declared ``vars``."""
        return check_template_params(params, ("template", "negative_template"))

    def run(self, name: str, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """Render both prompts; empty list items and runs of spaces are tidied away."""
        variables = {**params.vars, "input": ctx.trigger}
        return {
            "prompt": render_text(params.template, variables, limit=params.max_length),
            "negative_prompt": render_text(
                params.negative_template, variables, limit=params.max_length
            ),
        }
