"""Acceptance: schemathesis against the /openapi.json of a running `genhook serve` (SQLite and
PostgreSQL), with a service key and the operator key: every operation, positive and negative
cases, and stateful sequences along the document's links (a trigger's ``job_id`` into the job,
its cancel, retry, events and delivery log; a batch's ``batch_id`` into the batch). Checks on
every answer: no 5xx, the status code and content type are documented, the body has its
documented shape, and every 4xx in JSON carries an ``error_code``.

The server runs in a loopback-only network namespace (:mod:`tests.acceptance.netns_serve`) with
the production callback policy (private addresses refused): whatever callback or input URL the
fuzzer makes up, nothing outside this machine's loopback can be reached.

Size: ``GENHOOK_FUZZ_EXAMPLES`` cases per operation and generation mode (default 12,
derandomized, so that ``make test`` is deterministic); ``make reliability`` runs thousands.
``GENHOOK_FUZZ_REPORT``: a JSON file to write the figures to.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyStrategyDefinition, Unsatisfiable
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.acceptance import netns_serve
from tests.acceptance.harness import GENHOOK, TINY_FLOW, Genhook, wait_for

EXAMPLES = int(os.environ.get("GENHOOK_FUZZ_EXAMPLES", "12"))
FULL = "GENHOOK_FUZZ_EXAMPLES" in os.environ
STATEFUL_EXAMPLES = 12 if FULL else 4  # sequences per stateful run (see the stateful test)
ADMIN = "gh-admin-fuzz-0123456789abcdef"
TARGET = "fuzz-target"
"""The workflow the stateful sequences trigger: the tiny one, its input field named so that
schemathesis's dependency analysis takes no field for a reference to a resource none makes (an
``..._id`` field would keep the trigger from being a starting point)."""
TARGET_FLOW = TINY_FLOW.replace("id: tiny", f"id: {TARGET}").replace("item_id", "sku")
PRODUCT = {
    "product_id": "SKU-1",
    "product_name": "Oak Stool",
    "target_style": "minimal",
    "target_platform": "x_post",
}


@schemathesis.check
def error_code_on_4xx(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx answered in JSON is genhook's error shape, with an ``error_code``."""
    if 400 <= response.status_code < 500 and case.method.upper() != "HEAD":  # HEAD: no body
        kind = response.headers.get("content-type", [""])
        kind = kind[0] if isinstance(kind, list) else kind
        assert kind.startswith("application/json"), f"a {response.status_code} in {kind!r}"
        body = json.loads(response.content)
        assert isinstance(body, dict) and body.get("error_code"), f"no error_code: {body!r}"
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_code_on_4xx,
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory, db_kind: str) -> Iterator[Genhook]:
    """A `genhook serve` (no workers: jobs wait, so the fuzzer finds them queued, cancels and
    retries them) in a loopback-only namespace, with the production callback policy."""
    why = netns_serve.available()
    if why is not None:
        pytest.skip(why)
    g = Genhook(
        tmp_path_factory.mktemp(f"fuzz-{db_kind}"),
        database=db_kind,
        GENHOOK_ALLOW_PRIVATE_CALLBACKS="false",
        GENHOOK_ADMIN_KEY=ADMIN,
        GENHOOK_QUEUE_LIMIT="100000",
    )
    (g.tmp / "flows" / f"{TARGET}.yaml").write_text(TARGET_FLOW, encoding="utf-8")
    folder = Path(tempfile.mkdtemp(prefix="ghfz"))  # short: a socket's path has 107 bytes
    pg_port = None if g.database == "sqlite" else httpx.URL(g.database_url).port or 5432
    close = netns_serve.start(folder, g.port, pg_port)
    log = (g.tmp / "serve-fuzz.log").open("wb")
    g.logfiles.append(log)
    serve = [GENHOOK, "serve", "--port", str(g.port), "--workers", "0"]
    proc = subprocess.Popen(
        netns_serve.command(folder, g.port, pg_port, serve),
        env={**g.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    g.procs.append(proc)
    try:
        wait_for(g._healthy, 60, "genhook serve in its namespace to answer /healthz", every=0.2)
        assert g.trigger("product-image", PRODUCT).status_code == 202  # a job to start from
        yield g
    finally:
        g.close()
        close()
        shutil.rmtree(folder, ignore_errors=True)


def _auth(path: str, g: Genhook) -> dict[str, str]:
    operator = path.startswith(("/v1/ops", "/dashboard"))
    return {"Authorization": f"Bearer {ADMIN if operator else g.key}"}


def _schema(g: Genhook) -> Any:
    schema = schemathesis.openapi.from_url(f"{g.base}/openapi.json", timeout=30)
    schema.config.update(base_url=g.base)
    return schema


def _targeted(g: Genhook) -> Any:
    """The server's document with the triggers narrowed to one workflow and its own input schema
    (as GET /v1/workflows/{TARGET} publishes it), so that sequences start from jobs that exist:
    the document itself must take any workflow's body."""
    document = httpx.get(f"{g.base}/openapi.json", timeout=30).json()
    described = g.http.get(f"/v1/workflows/{TARGET}").json()
    body = {
        **described["input_schema"],
        "additionalProperties": False,
        "properties": {
            **described["input_schema"]["properties"],
            "priority": {"enum": ["low", "normal", "high"]},
            "client_metadata": {"type": "object", "maxProperties": 3},
        },
    }
    paths = document["paths"]
    for route, media in (("runs", body), ("batches", None), ("dry-run", body)):
        item = paths.pop(f"/v1/workflows/{{workflow_id}}/{route}")  # one workflow, named
        paths[f"/v1/workflows/{TARGET}/{route}"] = item
        operation = item["post"]
        operation["parameters"] = [p for p in operation["parameters"] if p["in"] != "path"]
        content = operation["requestBody"]["content"]["application/json"]
        if media is not None:
            content["schema"] = media
        else:
            items = content["schema"]["properties"]["items"]
            items.update(items=body, maxItems=3)
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=g.base)
    schema.config.phases.stateful.inference.algorithms = []  # the document's links only
    return schema


def _report(db_kind: str, figures: dict[str, Any]) -> None:
    target = os.environ.get("GENHOOK_FUZZ_REPORT")
    if not target:
        return
    with open(target, "a+", encoding="utf-8") as file:  # xdist workers share the file
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        text = file.read()
        found = json.loads(text) if text.strip() else {}
        found.setdefault(db_kind, {}).update(figures)
        file.seek(0)
        file.truncate()
        file.write(json.dumps(found, indent=2))


def _fuzz(
    operation: Any,
    mode: GenerationMode,
    g: Genhook,
    cases: dict[str, int],
    statuses: dict[int, int],
    failures: list[str],
) -> None:
    """``EXAMPLES`` cases of ``operation`` in ``mode``, each checked; failures listed (not only
    the first)."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=not FULL,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        cases[operation.label] = cases.get(operation.label, 0) + 1
        try:
            response = case.call_and_validate(
                headers=_auth(operation.path, g), checks=CHECKS, timeout=30
            )
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup
            if len(failures) < 40:
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
            return
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (an operation without parameters or body)
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_every_operation_keeps_its_documented_shape(fuzzed: Genhook, db_kind: str) -> None:
    """Every operation, positive and negative cases: no answer fails a check."""
    g = fuzzed
    schema = _schema(g)
    cases: dict[str, int] = {}
    statuses: dict[int, int] = {}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, [op.label for op in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, g, cases, statuses, failures)
    _report(db_kind, {"cases": sum(cases.values()), "operations": len(cases), "statuses": statuses})
    assert not failures, "\n\n".join(failures)
    assert statuses and not any(s >= 500 for s in statuses)


def test_stateful_sequences_along_the_links(fuzzed: Genhook, db_kind: str) -> None:
    """Sequences that follow the document's links: trigger, then the job, its cancel, retry,
    events and deliveries; batch, then the batch. Every answer passes every check."""
    g = fuzzed
    schema = _targeted(g)
    schema.config.checks.update(included_check_names=[c.__name__ for c in CHECKS])
    machine = schema.as_state_machine()
    calls = {"n": 0}
    linked: dict[str, int] = {}  # calls about a job or batch an earlier answer named
    named: set[str] = set()
    failures: list[str] = []

    class Machine(machine):  # type: ignore[misc,valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            calls["n"] += 1
            given = {**(case.path_parameters or {}), **(case.query or {})}
            if any(given.get(name) in named for name in ("job_id", "batch_id")):
                linked[case.operation.label] = linked.get(case.operation.label, 0) + 1
            job_id = given.get("job_id")
            if case.operation.path.endswith("/events") and job_id in named:
                # a job's event stream ends with its completion, and with no worker a queued
                # job never completes (the stream's keep-alives outlast any read timeout):
                # cancel it first, so the stream replays its events and ends
                httpx.post(
                    f"{g.base}/v1/jobs/{job_id}/cancel", headers=_auth("/v1/jobs", g), timeout=30
                )
            return {"headers": _auth(case.operation.path, g), "timeout": 30}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            try:  # listed, not raised: a replay against a live server cannot repeat a sequence
                case.validate_response(response, checks=CHECKS)
            except (Exception, BaseExceptionGroup) as exc:
                if len(failures) < 40:
                    failures.append(f"{case.operation.label}: {str(exc)[:1500]}")
            try:
                body = json.loads(response.content)
            except ValueError:
                return
            if isinstance(body, dict):
                named.update(str(body[k]) for k in ("job_id", "batch_id") if body.get(k))

    # At full size: many short runs, each with a fresh Hypothesis tree. The sequences' inputs
    # come from what the live server answered, so one long run's tree sees the same choices lead
    # to other values and stops with FlakyStrategyDefinition before any check fails; a short run
    # seldom does, and one that does is counted as abandoned (its calls were checked all the same)
    rounds = max(1, EXAMPLES // STATEFUL_EXAMPLES) if FULL else 3  # make test: 3 runs of 4
    abandoned = 0
    for _ in range(rounds):
        try:
            run_state_machine_as_test(
                Machine,
                settings=settings(
                    max_examples=STATEFUL_EXAMPLES,
                    stateful_step_count=10,
                    derandomize=not FULL,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                ),
            )
        except FlakyStrategyDefinition:
            abandoned += 1
    _report(
        db_kind,
        {
            "stateful_calls": calls["n"],
            "stateful_by_id": linked,
            "stateful_rounds": rounds,
            "stateful_rounds_abandoned": abandoned,
        },
    )
    assert abandoned < rounds, f"every one of {rounds} stateful runs was abandoned"
    assert abandoned <= rounds // 2 or not FULL, f"{abandoned} of {rounds} stateful runs abandoned"
    assert not failures, "\n\n".join(failures)
    assert calls["n"] > 0 and linked, (calls, linked)
