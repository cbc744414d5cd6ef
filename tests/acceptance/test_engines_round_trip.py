"""Acceptance: every shipped image workflow through a real `genhook serve` on each remote engine,
chosen by GENHOOK_IMAGE_BACKEND alone (no template edited), against that engine's faithful fake:
a signed success callback, every asset fetched and decoded, the engine's model named, and the
engine's key nowhere in what the caller sees."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.acceptance.harness import Genhook, Receiver, verify
from tests.conftest import SAMPLES
from tests.fake_comfyui import FakeComfyUI
from tests.fake_fal import FAKE_KEY as FAL_KEY
from tests.fake_fal import FakeFal
from tests.fake_openai import FAKE_API_KEY, FakeOpenAI
from tests.fake_replicate import FAKE_TOKEN, FakeReplicate

IMAGE_WORKFLOWS = ("product-image", "article-header", "user-hero", "onboarding-kit")
ENGINES = ("comfyui", "openai", "replicate", "fal")


@contextlib.contextmanager
def engine(name: str) -> Iterator[tuple[dict[str, str], str | None]]:
    """The fake ``name`` running, the settings that point genhook at it, and its secret."""
    if name == "comfyui":
        with FakeComfyUI() as comfy:
            yield {"GENHOOK_COMFYUI_URL": comfy.url}, None
    elif name == "openai":
        with FakeOpenAI() as openai:
            settings = {"GENHOOK_OPENAI_BASE_URL": openai.base_url}
            yield {**settings, "GENHOOK_OPENAI_API_KEY": FAKE_API_KEY}, FAKE_API_KEY
    elif name == "replicate":
        with FakeReplicate(image_scale=1.0, run_seconds=0.1) as replicate:
            yield (
                {
                    "GENHOOK_REPLICATE_BASE_URL": replicate.base_url,
                    "GENHOOK_REPLICATE_API_TOKEN": FAKE_TOKEN,
                },
                FAKE_TOKEN,
            )
    else:
        with FakeFal(image_scale=1.0, queue_seconds=0.05, run_seconds=0.1) as fal:
            yield {"GENHOOK_FAL_BASE_URL": fal.base_url, "GENHOOK_FAL_KEY": FAL_KEY}, FAL_KEY


def _sample(workflow_id: str) -> dict[str, Any]:
    path = sorted((SAMPLES / workflow_id).glob("*.json"))[0]
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("name", ENGINES)
def test_shipped_workflows_on_each_engine(
    name: str, tmp_path: Path, receiver: Receiver, db_kind: str
) -> None:
    with engine(name) as (env, secret):
        genhook = Genhook(tmp_path / "g", database=db_kind, GENHOOK_IMAGE_BACKEND=name, **env)
        try:
            genhook.serve(workers=2)
            jobs = {}
            for workflow_id in IMAGE_WORKFLOWS:
                body = {**_sample(workflow_id), "callback_url": receiver.url}
                answer = genhook.trigger(workflow_id, body)
                assert answer.status_code == 202, answer.text
                jobs[workflow_id] = answer.json()["job_id"]
            for workflow_id, job_id in jobs.items():
                (call,) = receiver.wait_job(job_id, timeout=120)
                assert secret is None or secret not in call.body.decode()
                payload = verify(genhook.secret, call)
                assert payload["status"] == "success", (workflow_id, payload["error"])
                assert payload["metadata"]["model_id"].startswith(f"{name}/"), payload["metadata"]
                assert payload["outputs"], workflow_id
                for output in payload["outputs"]:
                    got = httpx.get(output["asset_url"], timeout=30)
                    assert got.status_code == 200 and len(got.content) == output["bytes"]
                    with Image.open(io.BytesIO(got.content)) as image:
                        image.load()
                        assert image.size == (output["width"], output["height"])
                job = genhook.job(job_id)
                assert job["status"] == "succeeded"
                assert secret is None or secret not in json.dumps(job)
            assert secret is None or secret not in genhook.logs()
        finally:
            genhook.close()
