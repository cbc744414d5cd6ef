"""The engine (the runner): a workflow catalog plus the backends, built once, and one job run.

:func:`Engine.execute` is the whole life of a job minus the queue: run the graph on a trigger's
input (already split from its envelope and validated at the edge), store the assets through a
sink, build the completion payload (success or failure). The CLI calls it with a directory sink;
the service's worker, on the stored input, with its asset store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from genhook import metrics
from genhook.backends.base import (
    Backend,
    BackendRegistry,
    Control,
    GenerationRequest,
    GenerationResult,
    Progress,
    call_generate,
)
from genhook.catalog import Catalog, external_id
from genhook.contract.completion import CompletionPayload, failure_payload, success_payload
from genhook.cpu import CpuGate, process_gate
from genhook.errors import ErrorCode, GenhookError
from genhook.ids import new_job_id
from genhook.media.similarity import RecentHash
from genhook.presets import Presets
from genhook.pricing import Pricing, made
from genhook.workflow.node import Node, RunContext
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.result import Asset, RunResult
from genhook.workflow.runner import check_run_timeout, run_workflow
from genhook.workflow.template import Workflow

__all__ = ["AssetSink", "Engine", "Outcome", "external_id"]

CPU_BOUND_NODES = frozenset({"quality_check", "metadata", "export"})
"""Node kinds that run under the CPU gate unless they declare ``cpu_bound = False``."""
LOCAL_BACKENDS = frozenset({"procedural", "diffusers"})
"""Backends whose generation runs on this machine (under the CPU gate) unless they declare
``cpu_bound``; every other backend that declares nothing is taken to be local too, except the
shipped remote ones in :data:`REMOTE_BACKENDS` (a wrong guess costs concurrency, not cores)."""
REMOTE_BACKENDS = frozenset({"openai", "comfyui", "replicate", "fal"})
"""Backends whose generation waits on a remote engine (outside the CPU gate)."""
INLINE_NODES = frozenset({"metadata", "prompt_builder", "style_preset"})
"""Node kinds whose run is quick work on the trigger's text, with no generation, no file and
no wait: a workflow of these alone runs in the worker's claiming loop (see
:meth:`Engine.runs_inline`)."""


def node_cpu_bound(node: Node) -> bool:
    """Does this node kind's ``run`` cost a core (its declaration, else the shipped list)?"""
    declared = getattr(node, "cpu_bound", None)
    return declared if isinstance(declared, bool) else node.kind in CPU_BOUND_NODES


def backend_cpu_bound(name: str, backend: Backend) -> bool:
    """Does this backend's ``generate`` run here (its declaration, else by name)?"""
    declared = getattr(backend, "cpu_bound", None)
    if isinstance(declared, bool):
        return declared
    return name in LOCAL_BACKENDS or name not in REMOTE_BACKENDS


def backend_limits(backends: BackendRegistry) -> dict[str, int]:
    """The jobs at once each backend's engine takes, where it declares ``max_concurrency``."""
    limits: dict[str, int] = {}
    for name in backends.names():
        cap = getattr(backends.find(name), "max_concurrency", None)
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            limits[name] = cap
    return limits


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

    def __init__(
        self, catalog: Catalog, backends: BackendRegistry, gate: CpuGate | None = None
    ) -> None:
        self.catalog = catalog
        self.backends = backends
        self.gate = gate or process_gate()
        self._gated_backends = _GatedBackends(backends, self.gate)
        self._gated_nodes = _GatedNodes(catalog.nodes, self.gate)
        self._inline: dict[str, tuple[Workflow, bool]] = {}

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

    def runs_inline(self, workflow: Workflow) -> bool:
        """Is every node of ``workflow`` of a kind in :data:`INLINE_NODES` (the shipped kind
        itself, not a plugin's of the same name)? Such a job waits on nothing: the worker runs
        it in its claiming loop, with the others of its batch, rather than in a thread."""
        known = self._inline.get(workflow.id)
        if known is None or known[0] is not workflow:
            ok = all(
                spec.kind in INLINE_NODES
                and type(self.nodes.find(spec.kind)).__module__.startswith("genhook.nodes.")
                for spec in workflow.nodes.values()
            )
            known = (workflow, ok)
            self._inline[workflow.id] = known
        return known[1]

    def context(
        self,
        workflow: Workflow,
        trigger: Mapping[str, Any],
        *,
        job_id: str,
        is_cancelled: Callable[[], bool] = lambda: False,
        sandbox: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
        workdir: Path | None = None,
        recent_hashes: Sequence[RecentHash] = (),
        review_notes: Sequence[str] = (),
    ) -> RunContext:
        """A fresh run context on these backends (local ones under the CPU gate), priced by the
        catalog's pricing (seed stable for workflow, version, trigger); ``on_progress`` hears
        the backends' progress, ``workdir`` is the attempt's folder for their files,
        ``recent_hashes`` what the near_duplicate check compares with."""
        ctx = self.catalog.context(
            workflow,
            trigger,
            job_id=job_id,
            backends=self._gated_backends,
            is_cancelled=is_cancelled,
            sandbox=sandbox,
        )
        if on_progress is not None:
            ctx.on_progress = on_progress
        ctx.workdir = workdir
        ctx.recent_hashes = recent_hashes
        ctx.review_notes = review_notes
        return ctx

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
        on_progress: Callable[[Progress], None] | None = None,
        workdir: Path | None = None,
        recent_hashes: Sequence[RecentHash] = (),
        review_notes: Sequence[str] = (),
        client_metadata: dict[str, Any] | None = None,
    ) -> Outcome:
        """Run, store and build the completion payload; never raises GenhookError.

        ``trigger`` is the workflow's input as checked at the edge (defaults filled, envelope
        split off): it is not validated again here.

        ``worked`` tells the job's working time so far (earlier attempts, and this one since its
        claim; default: this call's own duration), and ``credit_before`` the credits of earlier
        attempts, so that the payload's ``processing_time_seconds`` and ``credit_cost`` cover
        all attempts (and no queue time). ``Outcome.credit_cost`` is this attempt's alone.
        ``sandbox``: a sandbox service's job (procedural, 0 credits, ``"test": true``).
        ``on_progress`` hears each generation's progress (the worker records it as the job's
        progress events); ``workdir`` is where generations put their files (the attempt's
        staging area, removed with it; None: a temporary folder per generation).
        ``recent_hashes``: the perceptual hashes of the recent outputs of the same service,
        workflow and external id, for the near_duplicate check (the worker reads them).
        ``review_notes``: the reviewers' notes of a rejected job's earlier outputs, folded into
        the generate nodes' prompts (the worker reads them).
        ``client_metadata``: the trigger's, echoed in the payload.

        The workflow's run timeout (``timeout`` in the template) bounds this call: backends
        stop at it (``control.deadline``), the runner checks it before each node, and a run
        that reached it fails ``timed_out``.
        """
        job_id = job_id or new_job_id()
        started = time.perf_counter()
        worked = worked or (lambda: time.perf_counter() - started)
        ext = external_id(workflow, trigger)
        ctx: RunContext | None = None
        try:
            ctx = self.context(
                workflow,
                trigger,
                job_id=job_id,
                is_cancelled=is_cancelled,
                sandbox=sandbox,
                on_progress=on_progress,
                workdir=workdir,
                recent_hashes=recent_hashes,
                review_notes=review_notes,
            )
            if workflow.timeout is not None:  # the run timeout: from this attempt's start
                ctx.deadline = time.monotonic() + workflow.timeout
            with metrics.job_scope(workflow.id):
                result = run_workflow(workflow, self._gated_nodes, ctx)
            check_run_timeout(ctx)  # the last node ended past it: the attempt still fails
            urls = [sink.put(job_id, asset) for asset in result.assets]
        except GenhookError as raised:
            exc = timed_out(raised, workflow, ctx)
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
            if client_metadata is not None:
                payload = payload.model_copy(update={"client_metadata": client_metadata})
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
        if client_metadata is not None:
            payload = payload.model_copy(update={"client_metadata": client_metadata})
        return Outcome(payload, result, None, result.credit_cost, made(result.generations))


def timed_out(error: GenhookError, workflow: Workflow, ctx: RunContext | None) -> GenhookError:
    """``error`` as the run timeout's own ``timed_out`` where the run reached its workflow's
    timeout: the runner's check between nodes, or a backend stopped at ``control.deadline``
    (which says ``backend_timeout``, otherwise its own bound's error: transient, retried).
    ``timed_out`` is not retried."""
    deadline = None if ctx is None else ctx.deadline
    if workflow.timeout is None or deadline is None:
        return error
    if error.code is ErrorCode.TIMED_OUT or (
        error.code is ErrorCode.BACKEND_TIMEOUT and time.monotonic() >= deadline - DEADLINE_SLACK
    ):
        return GenhookError(
            ErrorCode.TIMED_OUT,
            f"the attempt ran past workflow {workflow.id!r}'s run timeout of "
            f"{workflow.timeout:g} s",
        )
    return error


DEADLINE_SLACK = 0.05
"""Seconds before ``ctx.deadline`` at which a backend's own timeout counts as the run's."""


class _GatedBackend:
    """A backend whose generations run inside the CPU gate (local) or outside it (remote)."""

    def __init__(self, backend: Backend, gate: CpuGate, cpu_bound: bool) -> None:
        self._backend = backend
        self._gate = gate
        self.cpu_bound = cpu_bound

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def generate(self, request: GenerationRequest, control: Control) -> GenerationResult:
        """The backend's generation, in a slot of the gate or out of any."""
        step = self._gate.hold() if self.cpu_bound else self._gate.outside()
        with step:
            return call_generate(self._backend, request, control)


class _GatedBackends(BackendRegistry):
    """A view of a backend registry whose backends run by the CPU gate's rules."""

    def __init__(self, backends: BackendRegistry, gate: CpuGate) -> None:
        super().__init__()
        self._source = backends
        self._gate = gate
        self._wrapped: dict[tuple[str, int], _GatedBackend] = {}

    def names(self) -> list[str]:
        """The names of the registry it views."""
        return self._source.names()

    def find(self, name: str) -> Backend | None:
        """The backend ``name`` of the viewed registry, gated."""
        backend = self._source.find(name)
        if backend is None:
            return None
        key = (name, id(backend))
        gated = self._wrapped.get(key)
        if gated is None:
            gated = _GatedBackend(backend, self._gate, backend_cpu_bound(name, backend))
            self._wrapped[key] = gated
        return gated


class _GatedNode:
    """A CPU-bound node kind whose ``run`` takes a slot of the CPU gate."""

    def __init__(self, node: Node, gate: CpuGate) -> None:
        self._node = node
        self._gate = gate

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node, name)

    def run(self, name: str, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """The node's run, in a slot of the gate."""
        with self._gate.hold():
            return self._node.run(name, params, ctx)


class _GatedNodes(NodeRegistry):
    """A view of a node registry whose CPU-bound kinds run in the CPU gate."""

    def __init__(self, nodes: NodeRegistry, gate: CpuGate) -> None:
        super().__init__()
        self._source = nodes
        self._gate = gate

    def names(self) -> list[str]:
        """The kinds of the registry it views."""
        return self._source.names()

    def find(self, name: str) -> Node | None:
        """The node kind ``name`` of the viewed registry, gated when it is CPU-bound."""
        node = self._source.find(name)
        if node is None or not node_cpu_bound(node):
            return node
        return _GatedNode(node, self._gate)  # type: ignore[return-value]
