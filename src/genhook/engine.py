"""The engine (the runner): a workflow catalog plus the backends, built once, and one job run.

:func:`Engine.execute` is the whole life of a job minus the queue: run the graph on a trigger's
input (already split from its envelope and validated at the edge), store the assets through a
sink, build the completion payload (success or failure). The CLI calls it with a directory sink;
the service's worker, on the stored input, with its asset store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from genhook import metrics
from genhook.backends.base import BackendRegistry
from genhook.catalog import Catalog, external_id
from genhook.contract.completion import CompletionPayload, failure_payload, success_payload
from genhook.errors import GenhookError
from genhook.ids import new_job_id
from genhook.presets import Presets
from genhook.pricing import Pricing, made
from genhook.workflow.node import RunContext
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.result import Asset, RunResult
from genhook.workflow.runner import run_workflow
from genhook.workflow.template import Workflow

__all__ = ["AssetSink", "Engine", "Outcome", "external_id"]


class AssetSink(Protocol):
    """Where a job's files go; returns the URL each can be fetched from."""

    def put(self, job_id: str, asset: Asset) -> str:
        """Store ``asset``; return its ``asset_url``."""
        ...


@dataclass
class Outcome:
    """A finished attempt: its payload, and the run's result when it succeeded.

    ``credit_cost`` is this attempt's credits (the pricing file's price of what it made);
    ``made`` is what it made, ``{"image": N, "video_seconds": S}``, quality-check
    regenerations included, on success and on failure alike."""

    payload: CompletionPayload
    result: RunResult | None
    error: GenhookError | None
    credit_cost: float = 0.0
    made: dict[str, float] = field(default_factory=lambda: made(()))


class Engine:
    """The runner: a workflow catalog and the backends that run its jobs, built once.

    Only worker processes and ``genhook run`` build one (backends may be heavy, and the API
    needs none): the API holds the :class:`~genhook.catalog.Catalog` alone.
    """

    def __init__(self, catalog: Catalog, backends: BackendRegistry) -> None:
        self.catalog = catalog
        self.backends = backends

    @classmethod
    def load(
        cls,
        workflows: Path | None = None,
        presets: Presets | None = None,
        backends: BackendRegistry | None = None,
        pricing: Pricing | None = None,
    ) -> Engine:
        """Load the catalog of ``workflows`` (checked, priced by ``pricing``: default the
        shipped pricing file) and the backends (default: every one)."""
        return cls(
            Catalog.load(workflows, presets, pricing),
            backends or BackendRegistry.from_entry_points(),
        )

    @property
    def presets(self) -> Presets:
        """The catalog's presets."""
        return self.catalog.presets

    @property
    def nodes(self) -> NodeRegistry:
        """The catalog's node kinds."""
        return self.catalog.nodes

    @property
    def workflows(self) -> dict[str, Workflow]:
        """The catalog's checked workflows, by id."""
        return self.catalog.workflows

    def workflow(self, workflow_id: str) -> Workflow:
        """The workflow of this id, or ``unknown_workflow`` (with the nearest ids)."""
        return self.catalog.workflow(workflow_id)

    def context(
        self,
        workflow: Workflow,
        trigger: Mapping[str, Any],
        *,
        job_id: str,
        is_cancelled: Callable[[], bool] = lambda: False,
        sandbox: bool = False,
    ) -> RunContext:
        """A fresh run context on these backends, priced by the catalog's pricing (seed stable
        for workflow, version, trigger)."""
        return self.catalog.context(
            workflow,
            trigger,
            job_id=job_id,
            backends=self.backends,
            is_cancelled=is_cancelled,
            sandbox=sandbox,
        )

    def plan(self, workflow: Workflow, trigger: Mapping[str, Any]) -> dict[str, Any]:
        """The catalog's dry run, priced by the same pricing as a run."""
        return self.catalog.plan(workflow, trigger)

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
        sandbox: bool = False,
    ) -> Outcome:
        """Run, store and build the completion payload; never raises GenhookError.

        ``trigger`` is the workflow's input as checked at the edge (defaults filled, envelope
        split off): it is not validated again here.

        ``worked`` tells the job's working time so far (earlier attempts, and this one since its
        claim; default: this call's own duration), and ``credit_before`` the credits of earlier
        attempts, so that the payload's ``processing_time_seconds`` and ``credit_cost`` cover
        all attempts (and no queue time). ``Outcome.credit_cost`` is this attempt's alone.
        ``sandbox``: a sandbox service's job (procedural, 0 credits, ``"test": true``).
        """
        job_id = job_id or new_job_id()
        started = time.perf_counter()
        worked = worked or (lambda: time.perf_counter() - started)
        ext = external_id(workflow, trigger)
        ctx: RunContext | None = None
        try:
            ctx = self.context(
                workflow, trigger, job_id=job_id, is_cancelled=is_cancelled, sandbox=sandbox
            )
            with metrics.job_scope(workflow.id):
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
            if sandbox:
                payload = payload.model_copy(update={"test": True})
            return Outcome(payload, None, exc, cost, made(spent))
        finally:
            for generation in ctx.generations if ctx else ():
                metrics.generation_seconds(
                    workflow.id, generation.request.backend, generation.seconds
                )
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
        if sandbox:
            payload = payload.model_copy(update={"test": True})
        return Outcome(payload, result, None, result.credit_cost, made(result.generations))
