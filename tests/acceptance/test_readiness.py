"""/readyz on a real `genhook serve`: ready with a backend that answers, 503 with the reason when
no backend a workflow uses is ready (nothing listens where the engine should be) or the asset
storage cannot be written."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.acceptance.harness import Genhook, free_port


def test_ready_when_the_store_writes_and_a_backend_answers(
    genhook_factory: Callable[..., Genhook],
) -> None:
    g = genhook_factory()
    g.serve(workers=0)
    answer = httpx.get(f"{g.base}/readyz", timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ready"
    assert body["store"]["ok"] is True
    assert body["storage"] == {"ok": True, "detail": "local files, writable"}
    assert body["backends"]["procedural"]["ready"] is True


def test_not_ready_when_no_backend_a_workflow_uses_answers(
    genhook_factory: Callable[..., Genhook],
) -> None:
    dead = free_port()  # nothing listens there
    g = genhook_factory(
        GENHOOK_OPENAI_BASE_URL=f"http://127.0.0.1:{dead}/v1", GENHOOK_OPENAI_API_KEY="sk-test"
    )
    for path in (g.tmp / "flows").glob("*.yaml"):
        if path.name != "remote-image.yaml":
            path.unlink()
    g.serve(workers=0)
    answer = httpx.get(f"{g.base}/readyz", timeout=10)
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "unavailable"
    assert "openai" in body["reason"] and "not reachable" in body["reason"]
    assert httpx.get(f"{g.base}/healthz", timeout=10).status_code == 200  # alive, not ready


def test_not_ready_when_the_asset_storage_cannot_be_written(
    genhook_factory: Callable[..., Genhook],
) -> None:
    """Asset storage under a path that cannot be a folder (a file is in the way): /readyz is
    503 saying so, the process stays alive (/healthz 200: the store is fine)."""
    blocker = genhook_factory().tmp / "not-a-folder"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"")
    g = genhook_factory(GENHOOK_STORAGE_URL=f"file://{blocker}/assets")
    g.serve(workers=0)
    answer = httpx.get(f"{g.base}/readyz", timeout=10)
    assert answer.status_code == 503, answer.text
    body = answer.json()
    assert body["status"] == "unavailable" and body["storage"]["ok"] is False
    assert body["reason"].startswith("storage: local asset folder cannot be made")
    assert str(blocker) not in answer.text  # no path of the machine in a public answer
    assert httpx.get(f"{g.base}/healthz", timeout=10).status_code == 200
