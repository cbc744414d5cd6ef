"""The engine: workflows, presets, nodes and backends wired once at start-up, and one job run.

:func:`Engine.execute` is the whole life of a job minus the queue: run the graph on a trigger's
input (already split from its envelope and validated at the edge), store the assets through a
sink, build the completion payload (success or failure). The CLI calls it with a directory sink;
the service's worker, on the stored input, with its asset store.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from genhook.backends.base import BackendRegistry
from genhook.contract.completion import CompletionPayload, failure_payload, success_payload
from genhook.errors import ErrorCode, GenhookError, TemplateError, TemplateProblem
from genhook.ids import new_job_id
from genhook.paths import workflows_dir
from genhook.presets import Presets, load_presets
from genhook.seeds import stable_seed
from genhook.workflow.node import RunContext
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.result import Asset, RunResult
from genhook.workflow.runner import plan_workflow, run_workflow
from genhook.workflow.template import Workflow, load_workflow


class AssetSink(Protocol):
    """Where a job's files go; returns the URL each can be fetched from."""

    def put(self, job_id: str, asset: Asset) -> str:
        """Store ``asset``; return its ``asset_url``."""
        ...


@dataclass
class Outcome:
    """A finished job: its payload, and the run's result when it succeeded."""

    payload: CompletionPayload
    result: RunResult | None
    error: GenhookError | None
    credit_cost: float = 0.0


class Engine:
    """Everything needed to run jobs, loaded and checked once."""

    def __init__(
        self,
        presets: Presets,
        nodes: NodeRegistry,
        backends: BackendRegistry,
        workflows: Mapping[str, Workflow],
    ) -> None:
        self.presets = presets
        self.nodes = nodes
        self.backends = backends
        self.workflows = dict(workflows)

    @classmethod
    def load(
        cls,
        workflows: Path | None = None,
        presets: Presets | None = None,
        backends: BackendRegistry | None = None,
    ) -> Engine:
        """Load presets, plugins and every ``*.yaml`` template of ``workflows`` (checked)."""
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
        return cls(presets, nodes, backends or BackendRegistry.from_entry_points(), loaded)

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

    def context(
        self,
        workflow: Workflow,
        trigger: Mapping[str, Any],
        *,
        job_id: str,
        is_cancelled: Callable[[], bool] = lambda: False,
    ) -> RunContext:
        """A fresh run context; its seed is stable for (workflow, version, trigger)."""
        return RunContext(
            job_id=job_id,
            trigger=trigger,
            presets=self.presets,
            backends=self.backends,
            base_seed=stable_seed(workflow.id, workflow.version, dict(trigger)),
            is_cancelled=is_cancelled,
        )

    def plan(self, workflow: Workflow, trigger: Mapping[str, Any]) -> dict[str, Any]:
        """Dry run of a validated trigger: prompts, style, outputs and a credit estimate."""
        ctx = self.context(workflow, trigger, job_id="job_dry_run")
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

    def execute(
        self,
        workflow: Workflow,
        trigger: Mapping[str, Any],
        sink: AssetSink,
        *,
        job_id: str | None = None,
        attempts: int = 1,
        is_cancelled: Callable[[], bool] = lambda: False,
        worked: Callable[[], float] | None = None,
        credit_before: float = 0.0,
    ) -> Outcome:
        """Run, store and build the completion payload; never raises GenhookError.

        ``trigger`` is the workflow's input as checked at the edge (defaults filled, envelope
        split off): it is not validated again here.

        ``worked`` tells the job's working time so far (earlier attempts, and this one since its
        claim; default: this call's own duration), and ``credit_before`` the credits of earlier
        attempts, so that the payload's ``processing_time_seconds`` and ``credit_cost`` cover
        all attempts (and no queue time). ``Outcome.credit_cost`` is this attempt's alone.
        """
        job_id = job_id or new_job_id()
        started = time.perf_counter()
        worked = worked or (lambda: time.perf_counter() - started)
        ext = external_id(workflow, trigger)
        ctx: RunContext | None = None
        try:
            ctx = self.context(workflow, trigger, job_id=job_id, is_cancelled=is_cancelled)
            result = run_workflow(workflow, self.nodes, ctx)
            urls = [sink.put(job_id, asset) for asset in result.assets]
        except GenhookError as exc:
            spent = ctx.generations if ctx else []
            cost = round(sum(g.credit_cost for g in spent), 6)
            payload = failure_payload(
                job_id=job_id,
                workflow_id=workflow.id,
                external_id=ext,
                error=exc,
                attempts=attempts,
                processing_time_seconds=worked(),
                credit_cost=round(credit_before + cost, 6),
                generations=len(spent),
            )
            return Outcome(payload, None, exc, cost)
        payload = success_payload(
            job_id=job_id,
            workflow_id=workflow.id,
            external_id=ext,
            result=result,
            asset_urls=urls,
            attempts=attempts,
            processing_time_seconds=worked(),
            credit_before=credit_before,
        )
        return Outcome(payload, result, None, result.credit_cost)


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
