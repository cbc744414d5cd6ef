"""The one retry module: policy validation, decide() with the documented defaults, Retry-After."""

from __future__ import annotations

import math

import pytest

from genhook.config import Settings
from genhook.retry import (
    MAX_RETRY_AFTER,
    RetryDecision,
    RetryPolicy,
    decide,
    delivery_policy,
    job_policy,
    parse_retry_after,
)

JOBS = job_policy(Settings().retry_schedule)
CALLBACKS = delivery_policy(Settings().delivery_schedule)


def test_documented_defaults() -> None:
    """The defaults the docstring states: jobs 30s,2m,8m (4 attempts), callbacks 8 attempts."""
    assert JOBS.schedule == (30.0, 120.0, 480.0)
    assert JOBS.max_attempts == 4
    assert JOBS.retry_after == "max"
    assert CALLBACKS.schedule == (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
    assert CALLBACKS.max_attempts == 8
    assert CALLBACKS.retry_after == "replace"
    assert JOBS.max_retry_after == CALLBACKS.max_retry_after == MAX_RETRY_AFTER == 86400.0


@pytest.mark.parametrize(
    ("attempt", "retry_after", "delay"),
    [
        (1, None, 30.0),
        (2, None, 120.0),
        (3, None, 480.0),
        (1, 200.0, 200.0),  # Retry-After longer than the schedule stretches the wait
        (1, 5.0, 30.0),  # ... but never shortens it
        (3, 10 * MAX_RETRY_AFTER, MAX_RETRY_AFTER),  # capped at 24 h
        (1, math.inf, MAX_RETRY_AFTER),
        (1, -3.0, 30.0),
        (1, math.nan, 30.0),
    ],
)
def test_jobs_take_the_longer_wait(attempt: int, retry_after: float | None, delay: float) -> None:
    """Jobs: delay = max(s_a, min(max(ra, 0), 24 h)); s_a alone without a Retry-After."""
    decision = decide(JOBS, attempt, retry_after=retry_after)
    assert (decision.retry, decision.delay) == (True, delay)


@pytest.mark.parametrize(
    ("attempt", "retry_after", "delay"),
    [
        (1, None, 5.0),
        (2, None, 300.0),
        (7, None, 36000.0),
        (1, 7.0, 7.0),
        (3, 0.5, 0.5),  # Retry-After replaces the wait, even a shorter one
        (2, -3.0, 0.0),
        (1, 10 * MAX_RETRY_AFTER, MAX_RETRY_AFTER),
        (1, math.nan, 5.0),
    ],
)
def test_callbacks_let_retry_after_replace_the_wait(
    attempt: int, retry_after: float | None, delay: float
) -> None:
    """Callbacks: delay = min(max(ra, 0), 24 h) when a Retry-After came, else s_a."""
    decision = decide(CALLBACKS, attempt, retry_after=retry_after)
    assert (decision.retry, decision.delay) == (True, delay)


@pytest.mark.parametrize("policy", [JOBS, CALLBACKS])
def test_gives_up_after_the_last_attempt_whatever_retry_after_says(policy: RetryPolicy) -> None:
    """Attempt max_attempts is the last; a Retry-After never adds an attempt."""
    last = policy.max_attempts
    assert decide(policy, last - 1).retry is True
    assert decide(policy, last, retry_after=7.0) == RetryDecision(
        False, None, f"all {last} attempts used"
    )


def test_not_retryable_gives_up_at_once() -> None:
    """A permanent error ends on attempt 1."""
    decision = decide(JOBS, 1, retryable=False, retry_after=10.0)
    assert (decision.retry, decision.delay) == (False, None)
    assert decision.reason == "the error is not retryable"


def test_empty_schedule_means_one_attempt() -> None:
    """With no schedule the first failure is final."""
    policy = RetryPolicy(())
    assert policy.max_attempts == 1
    assert decide(policy, 1, retry_after=7.0).retry is False


def test_attempts_are_one_based() -> None:
    """Attempt 0 is a programming error."""
    with pytest.raises(ValueError, match="1-based"):
        decide(JOBS, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": (5.0, -1.0)},
        {"schedule": (math.inf,)},
        {"schedule": (math.nan,)},
        {"schedule": (5.0,), "retry_after": "min"},
        {"schedule": (5.0,), "max_retry_after": -1.0},
        {"schedule": (5.0,), "max_retry_after": math.inf},
    ],
)
def test_policy_refuses_invalid_values(kwargs: dict[str, object]) -> None:
    """A policy is validated when it is made."""
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen_and_normalised() -> None:
    """A policy cannot change after it is made; its schedule is a tuple of floats."""
    policy = RetryPolicy([1, 2])
    assert policy.schedule == (1.0, 2.0)
    with pytest.raises(AttributeError):
        policy.schedule = (3.0,)  # type: ignore[misc]


NOW = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("1e3", None),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("9" * 400, math.inf),
        ("Sun, 06 Nov 1994 08:51:37 GMT", 120.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:50:37 GMT", 60.0),  # RFC 850
        ("Sun Nov  6 08:49:47 1994", 10.0),  # asctime
        ("Sun, 06 Nov 1994 08:00:00 GMT", 0.0),  # in the past
        ("Mon, 07 Nov 1994 08:49:37 GMT", 86400.0),
        ("Fri, 06 Nov 2094 08:49:37 GMT", 3155760000.0),  # not capped here: policies cap
        ("Sun, 06 Nov 1994 08:49:37 +0000", None),  # not one of the three forms
        ("sun, 06 nov 1994 08:49:37 gmt", None),  # HTTP-date is case-sensitive
        ("Mon, 31 Feb 1994 08:49:37 GMT", None),
        ("Sun, 06 Nov 1994 24:00:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Delta-seconds and the three HTTP-date forms of RFC 9110 give seconds from now."""
    assert parse_retry_after(value, NOW) == expected


def test_rfc850_two_digit_year_is_never_more_than_50_years_ahead() -> None:
    """A two-digit year more than 50 years ahead of now means the century before (RFC 9110)."""
    now_2030 = 1893456000.0  # 2030-01-01
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now_2030) == 0.0
    assert parse_retry_after("Thursday, 01-Jan-70 00:00:10 GMT", now_2030 - 1893456000.0) == 10.0
    # 2060 from 2030 is 30 years ahead: kept in this century
    wait = parse_retry_after("Saturday, 01-Jan-60 00:00:00 GMT", now_2030)
    assert wait == 2840140800.0 - now_2030
