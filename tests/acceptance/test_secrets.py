"""Acceptance: no secret in anything a run writes or answers. A real `genhook serve` on a hosted
engine (the Replicate fake, which checks its bearer token as Replicate does) with an operator
key, an alert webhook with its secret, a service key and signing secret that get rotated, runs
jobs that succeed, fail at the engine (a wrong token), fail validation and fail to authenticate;
then everything it wrote and answered is searched for every secret: its logs, every file under
its data folder but the database (which must hold the signing secrets to sign), every callback
and alert body and header but the signatures, the job, its events and its delivery log, the
metrics, the operator summary and the dashboard."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.harness import Genhook, Receiver, verify
from tests.conftest import SAMPLES
from tests.fake_replicate import FAKE_TOKEN, FakeReplicate

ADMIN_KEY = "gh-admin-7d1c0e5b9a4f42c8b3e6a1d0f9c8b7a6"
ALERT_SECRET = "whsec_" + base64.b64encode(b"alert-secret-32-bytes-long-12345").decode()
WRONG_TOKEN = "r8_wrongTokenThatTheEngineRefuses0123456789"


@pytest.fixture
def replicate() -> Iterator[FakeReplicate]:
    with FakeReplicate(image_scale=1.0, run_seconds=0.1) as fake:
        yield fake


def _variants(secret: str) -> set[str]:
    """A secret and the forms it could leak in: a ``whsec_`` secret's key part (base64) and
    its decoded bytes' hex, and a bearer header."""
    found = {secret, f"Bearer {secret}"}
    if secret.startswith("whsec_"):
        raw = secret.removeprefix("whsec_")
        found |= {raw, base64.b64decode(raw).hex()}
    return found


def _files(root: Path) -> str:
    """Every file a run wrote under ``root`` but the SQLite database (it holds the signing
    secrets by design), as text."""
    texts = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("genhook.db"):
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(texts)


def test_no_secret_in_logs_files_payloads_answers_or_metrics(
    tmp_path: Path, replicate: FakeReplicate, receiver: Receiver, db_kind: str
) -> None:
    alerts = Receiver().start()
    env = {
        "GENHOOK_IMAGE_BACKEND": "replicate",
        "GENHOOK_REPLICATE_BASE_URL": replicate.base_url,
        "GENHOOK_ADMIN_KEY": ADMIN_KEY,
        "GENHOOK_ALERT_URL": alerts.url,
        "GENHOOK_ALERT_SECRET": ALERT_SECRET,
    }
    good = Genhook(
        tmp_path / "good", database=db_kind, GENHOOK_REPLICATE_API_TOKEN=FAKE_TOKEN, **env
    )
    bad = Genhook(
        tmp_path / "bad", database=db_kind, GENHOOK_REPLICATE_API_TOKEN=WRONG_TOKEN, **env
    )
    answers: list[str] = []
    try:
        for g in (good, bad):
            g.serve(workers=1)
        body = {
            **json.loads(
                (SAMPLES / "product-image" / "linen-shirt.json").read_text(encoding="utf-8")
            ),
            "callback_url": receiver.url,
        }
        done = good.trigger("product-image", body)
        assert done.status_code == 202, done.text
        refused = bad.trigger("product-image", body)
        assert refused.status_code == 202, refused.text
        invalid = good.trigger("product-image", {**body, "target_style": "no-such-style"})
        assert invalid.status_code == 422
        answers.append(invalid.text)
        for g in (good, bad):  # a wrong service key, a wrong operator key
            wrong = httpx.post(
                f"{g.base}/v1/workflows/product-image/runs",
                json=body,
                headers={"Authorization": f"Bearer {g.key}x"},
            )
            assert wrong.status_code == 401
            answers.append(wrong.text)
            ops = httpx.get(
                f"{g.base}/v1/ops/summary", headers={"Authorization": f"Bearer {ADMIN_KEY}x"}
            )
            assert ops.status_code in (401, 403)
            answers.append(ops.text)

        (ok_call,) = receiver.wait_job(done.json()["job_id"], timeout=120)
        assert verify(good.secret, ok_call)["status"] == "success"
        (failed_call,) = receiver.wait_job(refused.json()["job_id"], timeout=120)
        failed = verify(bad.secret, failed_call)
        assert failed["status"] == "failed", failed
        assert failed["error"]["error_code"] in ("backend_not_configured", "backend_rejected")
        assert "authentication" in failed["error"]["error_description"]  # the engine's words

        rotated = good.cli("services", "rotate-secret", "shop", "--overlap", "24h").stdout
        new_secret = json.loads(rotated)["webhook_secret"]
        again = good.trigger("product-image", {**body, "product_id": "SKU-ROTATED"})
        (two,) = receiver.wait_job(again.json()["job_id"], timeout=120)
        assert len(two.headers["webhook-signature"].split()) == 2
        verify(new_secret, two)

        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        for g in (good, bad):
            for job_id in (done, refused, again):
                if g is bad and job_id is not refused:
                    continue
                jid = job_id.json()["job_id"]
                answers.append(g.http.get(f"/v1/jobs/{jid}").text)
                answers.append(g.http.get(f"/v1/jobs/{jid}/events", timeout=30).text)
                answers.append(g.http.get("/v1/deliveries", params={"job_id": jid}).text)
            answers.append(httpx.get(f"{g.base}/metrics").text)
            answers.append(httpx.get(f"{g.base}/v1/ops/summary", headers=admin).text)
            answers.append(httpx.get(f"{g.base}/dashboard", headers=admin).text)
            answers.append(httpx.get(f"{g.base}/readyz").text)
    finally:
        for g in (good, bad):
            g.close()
        alerts.stop()

    calls = [*receiver.calls(), *alerts.calls()]
    assert calls
    sent = [
        c.body.decode("utf-8", errors="replace")
        + "".join(f"{k}: {v}" for k, v in c.headers.items() if k != "webhook-signature")
        for c in calls
    ]
    written = {
        "logs": good.logs() + bad.logs(),
        "files": _files(good.tmp / "var") + _files(bad.tmp / "var"),
        "callbacks and alerts": "\n".join(sent),
        "answers": "\n".join(answers),
    }
    secrets = {
        "the good service's API key": good.key,
        "the failing service's API key": bad.key,
        "the signing secret": good.secret,
        "the rotated signing secret": new_secret,
        "the other signing secret": bad.secret,
        "the operator key": ADMIN_KEY,
        "the alert secret": ALERT_SECRET,
        "the engine token": FAKE_TOKEN,
        "the refused engine token": WRONG_TOKEN,
    }
    for what, secret in secrets.items():
        for form in _variants(secret):
            for where, text in written.items():
                assert form not in text, f"{what} in the {where}"
