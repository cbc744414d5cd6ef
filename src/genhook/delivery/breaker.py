"""The endpoint breaker, a pure function of (state, event, now): the store applies it.

A callback endpoint (``scheme://host:port``) of a service is *failing* from the start of its
first failed attempt after a success (``failing_since``). When every attempt at it has failed for
``disable_seconds`` (``GENHOOK_ENDPOINT_DISABLE_AFTER``, 6 h) and over at least
``disable_deliveries`` different deliveries (``GENHOOK_ENDPOINT_DISABLE_DELIVERIES``, 10), the
endpoint is disabled: its deliveries wait (pending, not attempted, their schedules not spent)
and the operator event ``endpoint.disabled`` goes out, once. One success resets it. Both
conditions matter: six hours of one delivery's retries say little about an endpoint, and ten
deliveries failing within a minute are an outage that the retry schedule rides out. An operator
enables it again, which makes its waiting deliveries due at once (the replay) and starts the
count afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal


class EndpointState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


@dataclass(frozen=True)
class EndpointBreaker:
    """An endpoint's row in ``endpoints`` (a missing row is the default: enabled, not failing)."""

    state: EndpointState = EndpointState.ENABLED
    failing_since: float | None = None  # the start of the first failed attempt since a success
    failed_attempts: int = 0  # attempts failed since then
    disabled_at: float | None = None


@dataclass(frozen=True)
class EndpointPolicy:
    disable_seconds: float = 6 * 3600.0
    disable_deliveries: int = 10


@dataclass(frozen=True)
class EndpointEvent:
    """What happened: an attempt ``succeeded`` or ``failed`` (it started at ``started_at``;
    ``failing_deliveries`` is how many different deliveries have failed attempts since the
    breaker's ``failing_since``, this one's included), or an operator ``enabled`` it."""

    kind: Literal["succeeded", "failed", "enabled"]
    started_at: float = 0.0
    failing_deliveries: int = 0


@dataclass(frozen=True)
class EndpointDecision:
    state: EndpointBreaker
    disabled: bool = False  # disabled by this event: send endpoint.disabled
    replay: bool = False  # enabled by this event: its waiting deliveries are due now


def failing_long(state: EndpointBreaker, now: float, policy: EndpointPolicy) -> bool:
    """Has every attempt failed for ``disable_seconds`` (so deliveries are worth counting)?"""
    return state.failing_since is not None and now - state.failing_since >= policy.disable_seconds


def decide(
    state: EndpointBreaker, event: EndpointEvent, now: float, policy: EndpointPolicy
) -> EndpointDecision:
    """The breaker after ``event`` at ``now``."""
    if event.kind == "enabled":
        return EndpointDecision(EndpointBreaker(), replay=state.state is EndpointState.DISABLED)
    if event.kind == "succeeded":
        return EndpointDecision(
            replace(state, failing_since=None, failed_attempts=0)
            if state.state is EndpointState.DISABLED
            else EndpointBreaker()
        )
    since = state.failing_since if state.failing_since is not None else event.started_at
    failed = replace(state, failing_since=since, failed_attempts=state.failed_attempts + 1)
    if (
        failed.state is EndpointState.ENABLED
        and failing_long(failed, now, policy)
        and event.failing_deliveries >= policy.disable_deliveries
    ):
        return EndpointDecision(
            replace(failed, state=EndpointState.DISABLED, disabled_at=now), disabled=True
        )
    return EndpointDecision(failed)
