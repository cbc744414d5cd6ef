"""Acceptance: `GET /metrics` of a real `genhook serve` with two worker processes, parsed with
prometheus-client's own parser, equals what the test did."""

from __future__ import annotations

import signal
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.harness import Genhook

JOBS = 4
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(g: Genhook) -> Samples:
    """/metrics without a key, every sample by (name, labels)."""
    answer = httpx.get(f"{g.base}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_what_the_service_did_across_processes(
    genhook_factory: Callable[..., Genhook],
) -> None:
    g = genhook_factory()
    server = g.serve(workers=2)
    refused = g.trigger("tiny", {"item_id": ""})  # too short: 422
    assert refused.status_code == 422, refused.text
    code = refused.json()["error_code"]
    ids = []
    for n in range(JOBS):
        answer = g.trigger("tiny", {"item_id": f"item-{n}"})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["job_id"])
    for job_id in ids:
        g.wait_status(job_id, {"succeeded"})

    got = scrape(g)
    shop = {"service": "shop", "workflow": "tiny"}
    # counted in the API process
    assert value(got, "genhook_triggers_accepted_total", **shop) == JOBS
    assert value(got, "genhook_triggers_refused_total", **shop, code=code) == 1
    assert sum(v for (n, _), v in got.items() if n == "genhook_triggers_refused_total") == 1
    # counted in the worker processes: tiny makes one image (single frame, no QC retry)
    backend = {"workflow": "tiny", "backend": "procedural"}
    assert value(got, "genhook_generation_seconds_count", **backend) == JOBS
    assert value(got, "genhook_generation_seconds_bucket", **backend, le="+Inf") == JOBS
    assert value(got, "genhook_generation_seconds_sum", **backend) > 0
    assert value(got, "genhook_export_seconds_count", workflow="tiny") == JOBS
    for check in ("width", "height", "sharpness"):
        checked = sum(
            value(got, "genhook_qc_checks_total", workflow="tiny", check=check, result=r)
            for r in ("pass", "fail")
        )
        assert checked == JOBS, check
    assert value(got, "genhook_job_retries_total", **shop) == 0
    # read from the database
    assert value(got, "genhook_jobs_ended_total", **shop, status="succeeded") == JOBS
    assert value(got, "genhook_jobs_ended_total", **shop, status="failed") == 0
    assert value(got, "genhook_jobs", **shop, status="queued") == 0
    assert value(got, "genhook_queue_depth", service="shop") == 0
    assert value(got, "genhook_jobs_held", service="shop", reason="rate_limit") == 0
    assert value(got, "genhook_service_paused", service="shop") == 0
    assert value(got, "genhook_store_up") == 1
    # the API process and at least one worker wrote their own files
    assert len(list((g.tmp / "var" / "metrics").glob("counter_*.db"))) >= 2

    # a new `genhook serve` counts from zero; the database's facts stay
    server.send_signal(signal.SIGTERM)
    server.wait(30)
    g.serve(workers=1)
    again = scrape(g)
    assert value(again, "genhook_triggers_accepted_total", **shop) == 0
    assert value(again, "genhook_generation_seconds_count", **backend) == 0
    assert value(again, "genhook_jobs_ended_total", **shop, status="succeeded") == JOBS
