"""Flow-control policies as pure functions of (state, event, now): the store applies them.

Rate limit (a sliding window, exact): at most N of a service's jobs start in any window of
``period`` seconds. Each accepted job gets a start slot, ``max(now, slot[k-N] + period)`` where
``slot[k-N]`` is the slot given N jobs earlier: so no window of ``period`` holds more than N slots,
a burst of N starts at once (no smoothing inside the allowance), and the (N+1)-th waits exactly
until the first one's window has passed. The slot is the job's ``eligible_at``. The claim checks
the same rule on real starts (a backlog that waited for workers must not start all at once).

We chose the sliding log over GCRA: GCRA with a burst of N lets 2N-1 jobs start within one
period (a full burst, then one per emission interval), which breaks the contract's "at most N per
window"; a fixed window lets 2N through across its edge. The log costs one indexed read of the
N-th latest slot per accepted job of a rate-limited service.

Trigger storm: more than three times the hourly limit in the last hour pauses the service (for a
limit over a longer period, such as ``1/d``, more than three times its count: the window itself lets
a burst of its count through, and 3 x 1/24 an hour would trip at the first trigger). The
count is two hour buckets in the service's row (this hour's and the last one's, weighted by how
much of the last hour is still in the window), one update per accepted trigger, not a scan.

Budget: a job's estimate is reserved when it starts; what is spent and reserved today can never
pass the budget, so concurrent starts cannot overshoot. Backend breaker: consecutive transient
failures open it; while open its jobs wait and a probe tests it every ``probe_seconds``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from genhook.config_values import parse_rate

HOUR = 3600.0
STORM_FACTOR = 3.0


class HoldReason(StrEnum):
    """Why a queued job waits (``hold_reason`` in the job's view)."""

    RATE_LIMIT = "rate_limit"
    BUDGET = "budget"
    PAUSED = "paused"
    BACKEND_UNAVAILABLE = "backend_unavailable"


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` starts per ``period`` seconds."""

    count: int
    period: float

    @classmethod
    def parse(cls, text: str | None) -> RateLimit | None:
        """``100/h`` and the like; None for no limit."""
        if not text:
            return None
        count, period = parse_rate(text)
        return cls(count, period)

    @property
    def per_hour(self) -> float:
        return self.count * HOUR / self.period

    @property
    def storm_threshold(self) -> float:
        """Triggers in an hour past which the storm breaker pauses the service: three times the
        hourly rate, and never under three times the limit's own count."""
        return STORM_FACTOR * max(self.per_hour, float(self.count))

    def slot(self, now: float, nth_latest: float | None) -> float:
        """The start slot of a new job, given the slot of the job N places back (None when
        fewer than N jobs hold a slot)."""
        if nth_latest is None:
            return now
        return max(now, nth_latest + self.period)


@dataclass(frozen=True)
class Storm:
    """The storm breaker's two hour buckets, as kept in the service's row."""

    bucket: float | None  # the start of the current hour bucket
    count: int  # triggers in it
    previous: int  # triggers in the hour before it

    def add(self, now: float) -> Storm:
        """One more trigger at ``now``."""
        start = math.floor(now / HOUR) * HOUR
        if self.bucket is None or start - self.bucket >= 2 * HOUR:
            return Storm(start, 1, 0)
        if start > self.bucket:
            return Storm(start, 1, self.count)
        return Storm(self.bucket, self.count + 1, self.previous)

    def last_hour(self, now: float) -> float:
        """Triggers in the hour before ``now``: this bucket, plus the previous one weighted by
        the share of it still inside the window."""
        if self.bucket is None:
            return 0.0
        into = min(1.0, max(0.0, (now - self.bucket) / HOUR))
        return self.count + self.previous * (1.0 - into)

    def tripped(self, now: float, limit: RateLimit | None) -> bool:
        """More than the limit's storm threshold in the last hour (never without a limit)."""
        return limit is not None and self.last_hour(now) > limit.storm_threshold


class BudgetDecision(StrEnum):
    RESERVE = "reserve"
    HOLD = "hold"
    FAIL = "fail"


def budget_decision(
    budget: float | None, spent: float, reserved: float, estimate: float, on_budget: str
) -> BudgetDecision:
    """May a job with ``estimate`` credits start, given what today spent and holds reserved?

    It may when the budget covers it. A job estimated at 0 may start until the budget is used
    up (spent and reserved reach it). Otherwise ``on_budget`` says hold or fail."""
    if budget is None:
        return BudgetDecision.RESERVE
    committed = spent + reserved
    fits = committed + estimate <= budget + 1e-9 if estimate > 0 else committed < budget
    if fits:
        return BudgetDecision.RESERVE
    return BudgetDecision.FAIL if on_budget == "fail" else BudgetDecision.HOLD


def thresholds_crossed(
    budget: float | None, used: float, alerted_80: bool, alerted_100: bool
) -> list[float]:
    """The budget thresholds (0.8, 1.0) that ``used`` credits reach and that have not sent
    their event today."""
    if not budget:
        return []
    crossed = []
    if not alerted_80 and used >= 0.8 * budget - 1e-9:
        crossed.append(0.8)
    if not alerted_100 and used >= budget - 1e-9:
        crossed.append(1.0)
    return crossed


def utc_day(now: float) -> str:
    """The UTC day of ``now``: the budget ledger's key."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def next_utc_midnight(now: float) -> float:
    """When the next budget day begins."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day + timedelta(days=1)).timestamp()


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


@dataclass(frozen=True)
class Breaker:
    """A backend's breaker as kept in ``backend_state``."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float | None = None
    probe_at: float | None = None

    def failed(self, now: float, threshold: int, probe_seconds: float) -> Breaker:
        """A transient failure: the breaker opens at ``threshold`` failures in a row."""
        failures = self.failures + 1
        if self.state is BreakerState.OPEN:
            return Breaker(BreakerState.OPEN, failures, self.opened_at, self.probe_at)
        if failures >= threshold:
            return Breaker(BreakerState.OPEN, failures, now, now + probe_seconds)
        return Breaker(BreakerState.CLOSED, failures)

    def succeeded(self) -> Breaker:
        """A success (of a job or of a probe) closes it."""
        return Breaker()

    def probe_failed(self, now: float, probe_seconds: float) -> Breaker:
        return Breaker(BreakerState.OPEN, self.failures, self.opened_at, now + probe_seconds)

    def probe_due(self, now: float) -> bool:
        return self.state is BreakerState.OPEN and (self.probe_at or 0.0) <= now
