"""What a node kind is: typed parameters in, named typed outputs out, one ``run`` method.

A node kind is a class with ``kind`` (its name in templates), ``Params`` (a pydantic model of its
parameters: literal values and wired references are both checked against it when a template is
loaded), ``outputs`` (the name and type of each output other nodes may wire to), and ``run``.
Third parties add kinds through the ``genhook.nodes`` entry point group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from genhook.backends.base import BackendRegistry, GenerationResult, Progress
    from genhook.backends.defaults import BackendDefaults
    from genhook.media.similarity import RecentHash
    from genhook.presets import Presets
    from genhook.pricing import Pricing


FILENAME_LIMIT = 100
"""The longest filename an export reserves, extension and uniqueness suffix included."""
UNIQUE_SUFFIX_ROOM = 3
"""Characters a stem leaves for ``-2`` .. ``-99``, so that keeping names unique cuts no word."""


@dataclass
class QualityReport:
    """The outcome of one quality-check node: kept for the completion payload."""

    node: str
    passed: bool
    attempts: int
    failed_checks: list[dict[str, Any]]
    review: bool = False
    """Its policy is ``on_fail: review``: a failing output holds the job for a person."""


@dataclass
class RunContext:
    """What every node of one run shares: presets, backends, the job's identity and its ledger.

    ``prices`` (the pricing file) says what a request would cost and charges what each
    generation made, in a worker and in the API's dry runs alike (whose ``backends`` is empty:
    the API builds none)."""

    job_id: str
    trigger: Mapping[str, Any]
    presets: Presets
    backends: BackendRegistry
    prices: Pricing
    base_seed: int
    is_cancelled: Callable[[], bool] = lambda: False
    generations: list[GenerationResult] = field(default_factory=list)
    delivered: list[GenerationResult] = field(default_factory=list)
    quality: list[QualityReport] = field(default_factory=list)
    filenames: set[str] = field(default_factory=set)
    sandbox: bool = False
    """A sandbox (``--test``) service's run: every generation on procedural, at 0 credits."""
    defaults: BackendDefaults = field(default_factory=lambda: _defaults())
    """What ``backend: default`` and ``model: default`` mean in this install."""
    on_progress: Callable[[Progress], None] = lambda progress: None
    """Where a backend's progress goes (the worker records it as a ``job.progress`` event)."""
    deadline: float | None = None
    """``time.monotonic()`` by which the run must end (the template's run timeout), or None."""
    workdir: Path | None = None
    """The attempt's folder for files generations make (videos); None: a temporary one."""
    recent_hashes: Sequence[RecentHash] = ()
    """Perceptual hashes of the recent outputs of the same service, workflow and external id
    (newest first), for the near_duplicate check; empty in dry runs and ``genhook run``."""
    review_notes: Sequence[str] = ()
    """The notes of the reviewers who rejected this job's earlier outputs (oldest first): the
    generate nodes fold them into their prompts."""

    def reserve_filename(self, stem: str, extension: str, limit: int = FILENAME_LIMIT) -> str:
        """A filename unique within the job: ``stem.ext``, else ``stem-2.ext``, ``stem-3.ext``...;
        a stem too long for ``limit`` loses whole words from its end."""
        from genhook.nodes.metadata import cut_words  # nodes import this module

        n = 1
        while True:
            suffix = "" if n == 1 else f"-{n}"
            room = limit - len(suffix) - len(extension) - 1
            name = f"{cut_words(stem, room)}{suffix}.{extension}"
            if name not in self.filenames:
                self.filenames.add(name)
                return name
            n += 1


def _defaults() -> BackendDefaults:
    from genhook.backends.defaults import BackendDefaults

    return BackendDefaults()


class Node(Protocol):
    """A node kind. Instances are stateless; one instance serves every run."""

    kind: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    outputs: ClassVar[Mapping[str, Any]]

    def check(self, params: Mapping[str, Any], presets: Presets) -> list[tuple[str, str]]:
        """Extra load-time checks of the raw params (references unresolved): (param, message)."""
        ...

    def run(self, name: str, params: Any, ctx: RunContext) -> Mapping[str, Any]:
        """Do the work; return a value for every name in ``outputs``."""
        ...


class BaseNode:
    """Convenience base: no extra checks."""

    def check(self, params: Mapping[str, Any], presets: Presets) -> list[tuple[str, str]]:
        """No extra checks by default."""
        return []
