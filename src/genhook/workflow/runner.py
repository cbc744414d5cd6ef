"""Run a checked workflow's node graph on one validated trigger: pure, no HTTP, no database."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from genhook.errors import ErrorCode, GenhookError, InvalidInput
from genhook.workflow.node import RunContext
from genhook.workflow.refs import resolve, whole_ref
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.result import Asset, RunResult, SeoText
from genhook.workflow.template import NodeSpec, Workflow


def run_workflow(workflow: Workflow, nodes: NodeRegistry, ctx: RunContext) -> RunResult:
    """Execute every node in dependency order; collect the declared outputs."""
    values: dict[str, Mapping[str, Any]] = {"input": ctx.trigger}
    for name in workflow.order:
        if ctx.is_cancelled():
            raise GenhookError(ErrorCode.CANCELLED)
        check_run_timeout(ctx)
        spec = workflow.nodes[name]
        node = nodes.get(spec.kind)
        if node is None:
            raise GenhookError(ErrorCode.INTERNAL_ERROR, f"node kind {spec.kind!r} vanished")
        raw = resolve(spec.params, values)
        try:
            params = node.Params.model_validate(raw)
        except ValidationError as exc:
            raise _param_error(spec, exc) from exc
        try:
            values[name] = node.run(name, params, ctx)
        except InvalidInput as exc:
            exc.field = _input_field(spec, exc.field) or exc.field
            raise
    assets: list[Asset] = []
    for ref in workflow.outputs["assets"]:
        value = resolve(ref, values)
        assets.extend(value if isinstance(value, list) else [value])
    seo_ref = workflow.outputs.get("seo")
    seo = resolve(seo_ref, values) if seo_ref else None
    return RunResult(
        assets=assets,
        seo=seo if isinstance(seo, SeoText) else None,
        generations=ctx.generations,
        delivered=ctx.delivered,
        quality=ctx.quality,
    )


def check_run_timeout(ctx: RunContext) -> None:
    """Raise ``timed_out`` once the run is past its workflow's run timeout (``ctx.deadline``)."""
    if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
        raise GenhookError(ErrorCode.TIMED_OUT, "the run went past its workflow's run timeout")


def _input_field(spec: NodeSpec, param: str | None) -> str | None:
    """The trigger field wired to ``param`` of ``spec``, if it is wired straight from the input."""
    ref = whole_ref(spec.params.get(param)) if param else None
    return ref.name if ref is not None and ref.source == "input" else None


def _param_error(spec: NodeSpec, exc: ValidationError) -> GenhookError:
    """A parameter that the trigger filled in but the node refuses is the trigger's fault."""
    err = exc.errors()[0]
    param = str(err["loc"][0]) if err["loc"] else None
    field = _input_field(spec, param)
    if field is not None:
        return InvalidInput(ErrorCode.INVALID_VALUE, f"'{field}': {err['msg']}", field=field)
    return GenhookError(
        ErrorCode.INTERNAL_ERROR, f"node {spec.name!r} parameter {param!r}: {err['msg']}"
    )


def plan_workflow(workflow: Workflow, nodes: NodeRegistry, ctx: RunContext) -> dict[str, Any]:
    """Map a trigger without generating: each node that makes or spends something (a node with
    a ``plan`` method) reports what it would do; the others (prompts, styles, metadata) run."""
    values: dict[str, Mapping[str, Any]] = {"input": ctx.trigger}
    steps: list[dict[str, Any]] = []
    for name in workflow.order:
        spec = workflow.nodes[name]
        node = nodes.get(spec.kind)
        if node is None:
            raise GenhookError(ErrorCode.INTERNAL_ERROR, f"node kind {spec.kind!r} vanished")
        raw = resolve(spec.params, values)
        planner = getattr(node, "plan", None)
        if planner is not None:
            outputs, report = planner(name, raw, ctx)
        else:
            try:
                params = node.Params.model_validate(raw)
            except ValidationError as exc:
                raise _param_error(spec, exc) from exc
            outputs = node.run(name, params, ctx)
            report = {k: v for k, v in outputs.items() if isinstance(v, str | int | float)}
        values[name] = outputs
        steps.append({"node": name, "kind": spec.kind, **report})
    return {"steps": steps}
