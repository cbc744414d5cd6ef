"""The workflow catalog: presets, node kinds and checked workflows; what the API serves.

The catalog finds a workflow (with the nearest ids when one is misspelt), describes it,
validates a trigger against it and plans a dry run, all without a backend: backends belong to
the runner (:class:`genhook.engine.Engine`), which worker processes and ``genhook run`` build on
first use. Credits come from the pricing file (:mod:`genhook.pricing`), for the dry run's
estimate and a run's real cost alike; a workflow naming a backend or model the file does not
price is refused when the catalog is built (procedural excepted: it is free).
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from genhook.backends.base import BackendRegistry
from genhook.backends.defaults import BackendDefaults
from genhook.errors import ErrorCode, GenhookError, TemplateError, TemplateProblem
from genhook.media.aspect import frame_of
from genhook.nodes.generate import Generate
from genhook.nodes.quality_check import QualityCheck
from genhook.nodes.targets import resolve_targets
from genhook.paths import workflows_dir
from genhook.presets import Presets, load_presets
from genhook.pricing import Pricing, shipped_pricing
from genhook.seeds import stable_seed
from genhook.workflow.inputs import CheckedTrigger, check_trigger
from genhook.workflow.node import RunContext
from genhook.workflow.refs import find_refs, resolve
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.runner import plan_workflow
from genhook.workflow.template import Workflow, load_workflow
from genhook.workflow.yamlsrc import YamlSyntaxError, load_located

COST_PARAMS = {
    "generate": ("backend", "model", "platforms", "aspect_classes", "kind", "duration_seconds"),
    "quality_check": ("max_retries",),
}
"""The parameters that decide what a plan costs, by node kind (the rest shape, not price)."""
FREE_PLANNERS = ("export",)
"""Node kinds whose ``plan`` costs nothing (so an estimate need not run them)."""


class Catalog:
    """Presets, node kinds and every installed workflow, loaded and checked once."""

    def __init__(
        self,
        presets: Presets,
        nodes: NodeRegistry,
        workflows: Mapping[str, Workflow],
        pricing: Pricing | None = None,
        defaults: BackendDefaults | None = None,
    ) -> None:
        self.presets = presets
        self.nodes = nodes
        self.defaults = defaults or BackendDefaults()
        self.workflows = {
            wf_id: with_defaults(wf, self.defaults) for wf_id, wf in workflows.items()
        }
        self.pricing = pricing or shipped_pricing()
        for wf in self.workflows.values():
            check_priced(wf, self.pricing)
        self._costs: weakref.WeakKeyDictionary[Workflow, _CostPlan | None] = (
            weakref.WeakKeyDictionary()
        )
        self._frames: dict[tuple[str, ...], int] = {}

    @classmethod
    def load(
        cls,
        workflows: Path | None = None,
        presets: Presets | None = None,
        pricing: Pricing | None = None,
        defaults: BackendDefaults | None = None,
    ) -> Catalog:
        """Load presets, node plugins and every ``*.yaml`` template of ``workflows`` (checked),
        priced by ``pricing`` (default: the shipped pricing file), ``backend: default`` and
        ``model: default`` resolved by ``defaults`` (default: procedural)."""
        presets = presets or load_presets()
        nodes = NodeRegistry.from_entry_points()
        loaded: dict[str, Workflow] = {}
        for path in sorted((workflows or workflows_dir()).glob("*.yaml")):
            wf = load_workflow(path, presets, nodes)
            if wf.id in loaded:
                raise TemplateError(
                    str(path),
                    [
                        TemplateProblem(
                            "id", 1, f"id {wf.id!r} is also used by {loaded[wf.id].source}"
                        )
                    ],
                )
            loaded[wf.id] = wf
        return cls(presets, nodes, loaded, pricing, defaults)

    def workflow(self, workflow_id: str) -> Workflow:
        """The workflow of this id, or ``unknown_workflow``."""
        try:
            return self.workflows[workflow_id]
        except KeyError:
            near = difflib.get_close_matches(workflow_id, list(self.workflows), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            known = ", ".join(sorted(self.workflows)) or "none"
            raise GenhookError(
                ErrorCode.UNKNOWN_WORKFLOW,
                f"no workflow {workflow_id[:80]!r}{hint} (installed: {known})",
                field=None,
            ) from None

    def describe(self, workflow_id: str) -> dict[str, Any]:
        """The integration contract of one workflow (``GET /v1/workflows/{id}``)."""
        return self.workflow(workflow_id).describe()

    def validate(self, workflow: Workflow, body: Any) -> CheckedTrigger:
        """Split ``body`` into input and envelope and check both (``InvalidInput`` if not)."""
        return check_trigger(workflow, body)

    def context(
        self,
        workflow: Workflow,
        trigger: Mapping[str, Any],
        *,
        job_id: str,
        backends: BackendRegistry,
        is_cancelled: Callable[[], bool] = lambda: False,
        sandbox: bool = False,
    ) -> RunContext:
        """A fresh run context, priced by the catalog's pricing; its seed is stable for
        (workflow, version, trigger). ``sandbox``: every generation on procedural, free."""
        return RunContext(
            job_id=job_id,
            trigger=trigger,
            presets=self.presets,
            backends=backends,
            prices=self.pricing,
            base_seed=stable_seed(workflow.id, workflow.version, dict(trigger)),
            is_cancelled=is_cancelled,
            sandbox=sandbox,
            defaults=self.defaults,
        )

    def plan(
        self, workflow: Workflow, trigger: Mapping[str, Any], *, sandbox: bool = False
    ) -> dict[str, Any]:
        """Dry run of a validated trigger: prompts, style, outputs and a credit estimate.

        Credits come from the catalog's pricing (no backend is built): ``expected`` is each
        generation once (what a run whose outputs pass QC costs), ``max`` every QC retry spent.
        ``sandbox``: as a sandbox service's job runs (procedural, 0 credits)."""
        ctx = self.context(
            workflow, trigger, job_id="job_dry_run", backends=BackendRegistry(), sandbox=sandbox
        )
        planned = plan_workflow(workflow, self.nodes, ctx)
        steps = planned["steps"]
        return {
            "workflow_id": workflow.id,
            "version": workflow.version,
            "external_id": external_id(workflow, trigger),
            "input": dict(trigger),
            "style": next((s["key"] for s in steps if s["kind"] == "style_preset"), None),
            "prompts": [s["prompt"] for s in steps if s["kind"] == "generate"],
            "outputs": [o for s in steps if s["kind"] == "export" for o in s["outputs"]],
            "credit_estimate": _estimate(steps),
            "steps": steps,
        }

    def estimate(
        self, workflow: Workflow, trigger: Mapping[str, Any], *, worst: bool = True
    ) -> float:
        """The credits of one attempt of a validated trigger, as the dry run states them:
        ``worst`` (default) the most it can cost (every QC retry spent: what a budget reserves),
        else what it costs when its outputs pass QC (the dry run's ``expected``).

        Fast (no prompt rendering, no plan): only the parameters that decide the cost are
        resolved from the trigger, and a frame count is cached per platform selection. A
        workflow whose cost depends on other nodes' outputs falls back to :meth:`plan`."""
        which = "max" if worst else "expected"
        costs = self._cost_plan(workflow)
        credits = None if costs is None else self._fast_estimate(costs, trigger)
        if credits is None:
            credits = self.plan(workflow, trigger)["credit_estimate"]
        return credits[which]

    def _fast_estimate(
        self, costs: _CostPlan, trigger: Mapping[str, Any]
    ) -> dict[str, float] | None:
        """The plan's credit estimate from the cost parameters alone (None: not resolvable
        without the plan, which then says what is wrong)."""
        values = {"input": trigger}
        steps = []
        for params in costs.generates:
            backend, model, platforms, aspect, kind, seconds = resolve(list(params), values)
            frames = self._frame_count(platforms, aspect)
            if not (isinstance(backend, str) and isinstance(model, str)) or frames is None:
                return None
            if kind == "video":  # each frame's clip, priced per second of video
                if not isinstance(seconds, int | float) or isinstance(seconds, bool):
                    return None
                steps.append(self.pricing.price(backend, model, "video_seconds", seconds * frames))
            else:
                steps.append(self.pricing.price(backend, model, "image", frames))
        retries = resolve(list(costs.retries), values)
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in retries):
            return None
        return _worst_case(steps, retries)

    def _cost_plan(self, workflow: Workflow) -> _CostPlan | None:
        """What decides ``workflow``'s cost (None: it depends on more than the trigger)."""
        if workflow not in self._costs:
            self._costs[workflow] = _cost_plan(workflow, self.nodes)
        return self._costs[workflow]

    def _frame_count(self, platforms: Any, aspect: Any) -> int | None:
        """Images one generate step makes: one per aspect class its platforms need, or one."""
        mode = aspect or ("single" if platforms is None else "per_class")
        if mode == "single":
            return 1
        targets = platforms if isinstance(platforms, list) else [platforms]
        if mode != "per_class" or not all(isinstance(t, str) for t in targets):
            return None
        key = tuple(targets)
        count = self._frames.get(key)
        if count is None:
            presets = resolve_targets(list(key), self.presets)
            count = len({frame_of(p) for p in presets})
            if len(self._frames) < 4096:
                self._frames[key] = count
        return count


@dataclass(frozen=True)
class _CostPlan:
    """The raw cost parameters of a workflow: each generate node's (backend, model, platforms,
    aspect_classes, kind, duration_seconds) and each quality check's ``max_retries``, defaults
    filled."""

    generates: tuple[tuple[Any, Any, Any, Any, Any, Any], ...]
    retries: tuple[Any, ...]


def _cost_plan(workflow: Workflow, nodes: NodeRegistry) -> _CostPlan | None:
    """The workflow's cost parameters, when the built-in generate and quality-check kinds spend
    all its credits and those parameters are literals or trigger fields; else None."""
    generates: list[tuple[Any, Any, Any, Any, Any, Any]] = []
    retries: list[Any] = []
    for name in workflow.order:
        spec = workflow.nodes[name]
        node = nodes.get(spec.kind)
        if spec.kind in COST_PARAMS:
            if type(node) is not _BUILTIN[spec.kind]:
                return None
            fields = node.Params.model_fields  # type: ignore[union-attr]
            raw = [spec.params.get(p, fields[p].default) for p in COST_PARAMS[spec.kind]]
            if any(ref.source != "input" for ref in find_refs(raw)):
                return None
            if spec.kind == "generate":
                generates.append((raw[0], raw[1], raw[2], raw[3], raw[4], raw[5]))
            else:
                retries.append(raw[0])
        elif getattr(node, "plan", None) is not None and spec.kind not in FREE_PLANNERS:
            return None  # a node kind that may spend: only its own plan can say
    return _CostPlan(tuple(generates), tuple(retries))


def _estimate(steps: list[dict[str, Any]]) -> dict[str, float]:
    """Credits of a plan's steps: each generation once, and the most if every QC retried."""
    return _worst_case(
        [s["credit_estimate"] for s in steps if s["kind"] == "generate"],
        [s["max_retries"] for s in steps if s["kind"] == "quality_check"],
    )


def _worst_case(steps: list[float], retries: list[int]) -> dict[str, float]:
    """Each generate step once (``expected``), and the most if every quality check retried
    fully (``max``). A step's credits cover all its aspect classes (one image each); a quality
    check retries each class on its own, so its worst case is its retries times the dearest
    step."""
    once = round(sum(steps), 6)
    return {"expected": once, "max": round(once + sum(retries) * max(steps, default=0), 6)}


def with_defaults(workflow: Workflow, defaults: BackendDefaults) -> Workflow:
    """``workflow`` with each generate node's literal ``backend``/``model`` defaults resolved
    (the workflow as written stays in its file; the catalog holds what this install runs)."""
    nodes = dict(workflow.nodes)
    changed = False
    for name, spec in workflow.nodes.items():
        if spec.kind != "generate":
            continue
        params = defaults.params(spec.params)
        if params != spec.params:
            nodes[name] = replace(spec, params=params)
            changed = True
    return replace(workflow, nodes=nodes) if changed else workflow


def check_priced(workflow: Workflow, pricing: Pricing) -> None:
    """Refuse ``workflow`` if a generate node names a backend/model ``pricing`` does not price.

    A backend or model wired from the trigger is checked when a run resolves it."""
    problems: list[TemplateProblem] = []
    for name in workflow.order:
        spec = workflow.nodes[name]
        if spec.kind != "generate":
            continue
        backend = spec.params.get("backend", _BUILTIN_DEFAULTS["backend"])
        model = spec.params.get("model", _BUILTIN_DEFAULTS["model"])
        if not (isinstance(backend, str) and isinstance(model, str)):
            continue
        if list(find_refs([backend, model])):
            continue
        kind = spec.params.get("kind", "image")
        problem = pricing.problem(backend, model, "video_seconds" if kind == "video" else "image")
        if problem is not None:
            param = "model" if "model" in spec.params else "backend"
            path = ("nodes", name, "with", param)
            problems.append(TemplateProblem(".".join(path), _line(workflow.source, path), problem))
    if problems:
        raise TemplateError(workflow.source, problems)


def _line(source: str, path: tuple[str, ...]) -> int | None:
    """The line of ``path`` in the template file ``source`` (None if it cannot be read)."""
    try:
        return load_located(Path(source).read_text(encoding="utf-8")).line(path)
    except (OSError, UnicodeDecodeError, YamlSyntaxError):
        return None


def external_id(workflow: Workflow, trigger: Mapping[str, Any]) -> str | None:
    """The caller's own id, from the workflow's declared ``external_id`` field."""
    if workflow.external_id is None:
        return None
    value = trigger.get(workflow.external_id)
    return None if value is None else str(value)


_BUILTIN: dict[str, type] = {"generate": Generate, "quality_check": QualityCheck}
_BUILTIN_DEFAULTS = {
    "backend": Generate.Params.model_fields["backend"].default,
    "model": Generate.Params.model_fields["model"].default,
}
