"""Sandbox services' parts: the dry run plans what a sandbox job runs, the store keeps the flag
on the service and on its jobs, and every failed payload built from a sandbox job says
``"test": true`` (on SQLite and PostgreSQL where a store is involved)."""

from __future__ import annotations

from pathlib import Path

from genhook.catalog import Catalog
from genhook.contract.completion import failure_payload, job_failure_payload
from genhook.errors import ErrorCode, GenhookError
from genhook.presets import Presets
from genhook.pricing import Pricing
from genhook.store.admit import Admission
from genhook.store.store import Store
from tests.test_pricing import flow

CANCELLED = GenhookError(ErrorCode.CANCELLED)


def test_a_sandbox_dry_run_names_procedural_and_costs_nothing(
    tmp_path: Path, presets: Presets
) -> None:
    pricing = Pricing.from_mapping({"scripted": {"m1": {"per_image": 1.5}}})
    catalog = Catalog.load(flow(tmp_path), presets, pricing)
    wf = catalog.workflow("paid")
    trigger = catalog.validate(wf, {"name": "vase"}).input
    paid = catalog.plan(wf, trigger)
    free = catalog.plan(wf, trigger, sandbox=True)
    generate = next(s for s in paid["steps"] if s["kind"] == "generate")
    sandboxed = next(s for s in free["steps"] if s["kind"] == "generate")
    assert (generate["backend"], generate["model"]) == ("scripted", "m1")
    assert paid["credit_estimate"]["expected"] > 0
    assert (sandboxed["backend"], sandboxed["model"]) == ("procedural", "procedural-v1")
    assert free["credit_estimate"] == {"expected": 0, "max": 0}
    assert free["prompts"] == paid["prompts"] and free["outputs"] == paid["outputs"]


def test_a_sandbox_services_jobs_carry_the_flag_into_every_failed_payload(store: Store) -> None:
    made = store.create_service("shop-staging", sandbox=True)
    service = store.service_for_key(made["api_key"])
    assert service is not None and service.sandbox
    job, _ = store.submit(
        service_id=service.id,
        workflow_id="product-image",
        workflow_version=1,
        trigger={"product_id": "P-1"},
        external_id="P-1",
        callback_url=None,
        admission=Admission(backend="procedural", estimate=0.0, sandbox=True),
    )
    stored = store.job(job.id)
    assert stored is not None and stored.sandbox
    cancelled = job_failure_payload(stored, CANCELLED)
    assert cancelled.test is True and cancelled.to_json()["test"] is True
    store.cancel(job.id, lambda row: job_failure_payload(row, CANCELLED).to_json())
    ended = store.job(job.id)
    assert ended is not None and ended.result is not None and ended.result["test"] is True
    # a normal service's: false
    other = store.create_service("shop")
    normal, _ = store.submit(
        service_id=other["service_id"],
        workflow_id="product-image",
        workflow_version=1,
        trigger={"product_id": "P-2"},
        external_id="P-2",
        callback_url=None,
    )
    found = store.job(normal.id)
    assert found is not None and not found.sandbox
    assert job_failure_payload(found, CANCELLED).test is False
    plain = failure_payload(job_id=job.id, workflow_id="w", external_id=None, error=CANCELLED)
    assert plain.test is False
