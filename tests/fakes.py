"""Fakes of the outside world only: a remote generation engine that answers from a script."""

from __future__ import annotations

from dataclasses import dataclass, field

from genhook.backends.base import AssetKind, BackendStatus, GenerationRequest, GenerationResult
from genhook.errors import GenhookError
from genhook.media import Pixels
from genhook.pricing import Pricing

SCRIPTED_PRICING = Pricing.from_mapping(
    {"scripted": {"*": {"per_image": 1.5}}}, "the scripted engine's pricing"
)
"""What a run on the scripted engine is charged: 1.5 credits an image (procedural free)."""


@dataclass
class ScriptedBackend:
    """Answers the n-th call with the n-th scripted image (or raises the scripted error).

    The last entry repeats. Every request is recorded, so tests can see how genhook changed the
    prompt and seed between attempts. Runs on it are charged by :data:`SCRIPTED_PRICING`
    (``cost`` is what it reports, which genhook replaces with the pricing file's price).
    """

    script: list[Pixels | GenhookError]
    name: str = "scripted"
    cost: float = 1.5
    kinds: frozenset[AssetKind] = frozenset({"image"})
    requests: list[GenerationRequest] = field(default_factory=list)

    def status(self) -> BackendStatus:
        return BackendStatus(True, "scripted test engine")

    def estimate_cost(self, request: GenerationRequest) -> float:
        return self.cost

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        step = self.script[min(len(self.requests), len(self.script)) - 1]
        if isinstance(step, GenhookError):
            raise step
        return GenerationResult(step, request, f"scripted/{request.model}", self.cost)
