"""When to try again: one retry policy, one pure decision, one ``Retry-After`` parser.

Jobs (the worker) and callback deliveries (the outbox) both retry on a schedule, and both hear
``Retry-After`` from the other side (a backend's 429/503, a receiver's 429/503). Everything about
*when* lives here, so that the two cannot drift apart:

* :class:`RetryPolicy`: a validated, frozen schedule, the rule for how a ``Retry-After`` combines
  with it, and the cap on any one wait;
* :func:`decide`: a pure function from (policy, attempt, retryable, retry-after) to a
  :class:`RetryDecision`;
* :func:`parse_retry_after`: the ``Retry-After`` header, both forms of RFC 9110 §10.2.3.

Nothing here reads a clock: callers pass ``now``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

#: The longest wait that a ``Retry-After`` can ask for (24 h), unless a policy says otherwise.
MAX_RETRY_AFTER = 24 * 60 * 60.0

RetryAfterRule = Literal["max", "replace"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: ``schedule[i]`` is the wait after attempt ``i + 1``.

    * ``schedule``: seconds, each finite and >= 0; ``len(schedule) + 1`` attempts in all.
    * ``retry_after``: ``"max"``, the wait is the longer of the scheduled one and the
      ``Retry-After`` (jobs: a rate-limited engine never shortens the back-off); ``"replace"``,
      a ``Retry-After`` replaces the scheduled wait, shorter or longer (callbacks: the receiver
      knows best when it is back). Either way it never adds attempts.
    * ``max_retry_after``: a ``Retry-After`` counts for at most this many seconds.

    Invalid values raise ``ValueError`` at construction, so a policy in hand is always usable.
    """

    schedule: tuple[float, ...]
    retry_after: RetryAfterRule = "max"
    max_retry_after: float = MAX_RETRY_AFTER

    def __init__(
        self,
        schedule: Sequence[float],
        retry_after: RetryAfterRule = "max",
        max_retry_after: float = MAX_RETRY_AFTER,
    ) -> None:
        waits = tuple(float(s) for s in schedule)
        for wait in waits:
            if not math.isfinite(wait) or wait < 0:
                raise ValueError(f"retry schedule waits must be finite and >= 0, got {wait}")
        if retry_after not in ("max", "replace"):
            raise ValueError(f"retry_after must be 'max' or 'replace', got {retry_after!r}")
        cap = float(max_retry_after)
        if not math.isfinite(cap) or cap < 0:
            raise ValueError(f"max_retry_after must be finite and >= 0, got {max_retry_after}")
        object.__setattr__(self, "schedule", waits)
        object.__setattr__(self, "retry_after", retry_after)
        object.__setattr__(self, "max_retry_after", cap)

    @property
    def max_attempts(self) -> int:
        """Attempts in all: the first one and one after each scheduled wait."""
        return len(self.schedule) + 1


def job_policy(schedule: Sequence[float]) -> RetryPolicy:
    """The jobs' policy (``GENHOOK_RETRY_SCHEDULE``, default 30s,2m,8m): Retry-After stretches."""
    return RetryPolicy(schedule, retry_after="max")


def delivery_policy(schedule: Sequence[float]) -> RetryPolicy:
    """The callbacks' policy (``GENHOOK_DELIVERY_SCHEDULE``): Retry-After replaces the wait."""
    return RetryPolicy(schedule, retry_after="replace")


@dataclass(frozen=True)
class RetryDecision:
    """Try again after ``delay`` seconds, or (``retry`` False, ``delay`` None) give up."""

    retry: bool
    delay: float | None
    reason: str


def decide(
    policy: RetryPolicy,
    attempt: int,
    *,
    retryable: bool = True,
    retry_after: float | None = None,
) -> RetryDecision:
    """Whether and when to make attempt ``attempt + 1``, given that attempt ``attempt`` failed.

    ``attempt`` is 1-based. With ``n = len(policy.schedule)``, ``s = policy.schedule[attempt - 1]``,
    ``cap = policy.max_retry_after`` and ``ra = min(max(retry_after, 0), cap)``::

        give up                  if not retryable, or attempt > n (all attempts used)
        delay = s                if retry_after is None (or NaN)
              = max(s, ra)       rule "max"     (jobs)
              = ra               rule "replace" (callbacks)

    Defaults: jobs ``30s,2m,8m`` (4 attempts), callbacks ``5s,5m,30m,2h,5h,10h,10h`` (8 attempts),
    ``cap`` 24 h. So a job rate-limited with ``Retry-After: 200`` after attempt 1 waits 200 s,
    one told ``Retry-After: 5`` still waits 30 s; a callback told ``Retry-After: 5`` waits 5 s.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if not retryable:
        return RetryDecision(False, None, "the error is not retryable")
    if attempt > len(policy.schedule):
        return RetryDecision(False, None, f"all {policy.max_attempts} attempts used")
    scheduled = policy.schedule[attempt - 1]
    if retry_after is None or math.isnan(retry_after):
        return RetryDecision(True, scheduled, "scheduled")
    asked = min(max(retry_after, 0.0), policy.max_retry_after)
    if policy.retry_after == "replace":
        return RetryDecision(True, asked, "Retry-After")
    if asked > scheduled:
        return RetryDecision(True, asked, "Retry-After")
    return RetryDecision(True, scheduled, "scheduled")


_DELTA_SECONDS = re.compile(r"[0-9]+")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "(?P<mon>" + "|".join(_MONTHS) + ")"
_TIME = r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
_IMF_FIXDATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (?P<d>\d\d) " + _MONTH + r" (?P<y>\d{4}) " + _TIME + " GMT"
)
_RFC850 = re.compile(
    r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (?P<d>\d\d)-"
    + _MONTH
    + r"-(?P<y>\d\d) "
    + _TIME
    + " GMT"
)
_ASCTIME = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) " + _MONTH + r" (?P<d>[ \d]\d) " + _TIME + r" (?P<y>\d{4})"
)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, counted from ``now`` (Unix seconds).

    RFC 9110 §10.2.3: delta-seconds (``"120"``) or an HTTP-date in any of its three forms,
    IMF-fixdate ``Sun, 06 Nov 1994 08:49:37 GMT``, the obsolete RFC 850 form (a two-digit year
    more than 50 years ahead means the century before) and asctime (UTC). A date in the past gives
    0; a delta too long for a float gives ``inf`` (policies cap it). Absent, empty or malformed
    (``"1.5"``, ``"-5"``, other date spellings) gives None, so the schedule alone applies.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)  # float() of a huge number is inf, never an error
    when = _http_date(text, now)
    return None if when is None else max(when - now, 0.0)


def _http_date(text: str, now: float) -> float | None:
    """The Unix time an HTTP-date spells, or None."""
    for form in (_IMF_FIXDATE, _RFC850, _ASCTIME):
        match = form.fullmatch(text)
        if match is not None:
            break
    else:
        return None
    year = int(match["y"])
    if form is _RFC850:
        this_year = _year_of(now)
        year += this_year - this_year % 100
        if year > this_year + 50:
            year -= 100
    second = int(match["s"])  # 60 is a leap second: count it as the next one
    try:
        when = datetime(
            year,
            _MONTHS.index(match["mon"]) + 1,
            int(match["d"]),
            int(match["h"]),
            int(match["m"]),
            min(second, 59),
            tzinfo=UTC,
        )
    except ValueError:  # 31 Feb, hour 24, ...
        return None
    return when.timestamp() + (second - 59 if second > 59 else 0)


def _year_of(now: float) -> int:
    return time.gmtime(now).tm_year
