"""The job retry decision: a pure function of the attempt number, the error and the schedule."""

from __future__ import annotations

from collections.abc import Sequence

from genhook.errors import GenhookError


def retry_delay(attempt: int, error: GenhookError, schedule: Sequence[float]) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None to fail the job for good.

    With ``schedule = (s1, s2, ..., sn)`` and attempt ``a`` (1-based) just failed with a
    retryable error: wait ``max(s_a, error.retry_after or 0)`` when ``a <= n``; otherwise, or
    when the error is not retryable, give up. The default ``30s,2m,8m`` makes 4 attempts.
    """
    if not error.retryable or attempt > len(schedule):
        return None
    return max(schedule[attempt - 1], error.retry_after or 0.0)
