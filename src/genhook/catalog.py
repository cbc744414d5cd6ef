"""The workflow catalog: presets, node kinds and checked workflows; what the API serves.

The catalog finds a workflow (with the nearest ids when one is misspelt), describes it,
validates a trigger against it and plans a dry run, all without a backend: backends belong to
the runner (:class:`genhook.engine.Engine`), which worker processes and ``genhook run`` build on
first use. A dry run's credits come from price data (:mod:`genhook.backends.prices`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from genhook.backends.base import BackendRegistry, Prices
from genhook.backends.prices import SettingsPrices
from genhook.errors import ErrorCode, GenhookError, TemplateError, TemplateProblem
from genhook.paths import workflows_dir
from genhook.presets import Presets, load_presets
from genhook.seeds import stable_seed
from genhook.workflow.inputs import CheckedTrigger, check_trigger
from genhook.workflow.node import RunContext
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.runner import plan_workflow
from genhook.workflow.template import Workflow, load_workflow


class Catalog:
    """Presets, node kinds and every installed workflow, loaded and checked once."""

    def __init__(
        self,
        presets: Presets,
        nodes: NodeRegistry,
        workflows: Mapping[str, Workflow],
        prices: Prices | None = None,
    ) -> None:
        self.presets = presets
        self.nodes = nodes
        self.workflows = dict(workflows)
        self.prices: Prices = prices or SettingsPrices()

    @classmethod
    def load(
        cls,
        workflows: Path | None = None,
        presets: Presets | None = None,
        prices: Prices | None = None,
    ) -> Catalog:
        """Load presets, node plugins and every ``*.yaml`` template of ``workflows`` (checked)."""
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
        return cls(presets, nodes, loaded, prices)

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
        prices: Prices,
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> RunContext:
        """A fresh run context; its seed is stable for (workflow, version, trigger)."""
        return RunContext(
            job_id=job_id,
            trigger=trigger,
            presets=self.presets,
            backends=backends,
            prices=prices,
            base_seed=stable_seed(workflow.id, workflow.version, dict(trigger)),
            is_cancelled=is_cancelled,
        )

    def plan(
        self, workflow: Workflow, trigger: Mapping[str, Any], *, prices: Prices | None = None
    ) -> dict[str, Any]:
        """Dry run of a validated trigger: prompts, style, outputs and a credit estimate.

        Credits come from ``prices``: by default the catalog's price data
        (:class:`~genhook.backends.prices.SettingsPrices`: the built-ins' prices are settings,
        so no backend is built; a plugin backend is built lazily, once, when a plan first needs
        its price). An engine passes its own backends instead."""
        ctx = self.context(
            workflow,
            trigger,
            job_id="job_dry_run",
            backends=BackendRegistry(),
            prices=prices or self.prices,
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


def _estimate(steps: list[dict[str, Any]]) -> dict[str, float]:
    """Credits: each generation once, and the most if every quality check retried fully.

    A generate step's estimate covers all its aspect classes (one image each); a quality check
    retries each class on its own, so its worst case is its retries times the dearest step."""
    once = sum(s["credit_estimate"] for s in steps if s["kind"] == "generate")
    retries = sum(s["max_retries"] for s in steps if s["kind"] == "quality_check")
    per_generation = max(
        (s["credit_estimate"] for s in steps if s["kind"] == "generate"), default=0
    )
    return {"expected": once, "max": once + retries * per_generation}


def external_id(workflow: Workflow, trigger: Mapping[str, Any]) -> str | None:
    """The caller's own id, from the workflow's declared ``external_id`` field."""
    if workflow.external_id is None:
        return None
    value = trigger.get(workflow.external_id)
    return None if value is None else str(value)
