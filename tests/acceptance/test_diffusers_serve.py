"""Acceptance: the shipped product-image workflow through a real `genhook serve` on the local
``diffusers`` backend (GENHOOK_IMAGE_BACKEND=diffusers, GENHOOK_DIFFUSERS_MODEL_DIR on the tiny
random pipeline of tests/tiny_pipeline.py, loaded by the worker as a user's model folder is, on
the CPU, nothing downloaded): a signed callback verified with standardwebhooks, every asset
fetched over HTTP and decoded, and the pipeline's steps on the job's SSE stream as ``progress``
events.

The template is copied with one change so that the tiny pipeline runs at its own scale (as in
tests/test_diffusers_backend.py): one 64x64 image for every preset, in 4 steps.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.acceptance.harness import Genhook, Receiver, verify
from tests.conftest import SAMPLES

pytest.importorskip("diffusers", reason="the diffusers extra is not installed")
pytest.importorskip("torch", reason="the diffusers extra is not installed")

STEPS = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline's folder (model_index.json at its top), built once for the module."""
    import torch

    from tests.tiny_pipeline import build

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build(tmp_path_factory.mktemp("models") / "tiny-sd")
    finally:
        torch.set_num_threads(threads)


def small_product_image(flows: Path) -> None:
    """product-image in ``flows`` at the tiny pipeline's scale: one 64x64 image, 4 steps."""
    path = flows / "product-image.yaml"
    template = yaml.safe_load(path.read_text(encoding="utf-8"))
    image = template["nodes"]["image"]["with"]
    assert image["backend"] == "default" and image["model"] == "default"
    image.update(width=64, height=64, aspect_classes="single", options={"steps": STEPS})
    template["nodes"]["qc"]["with"].update(min_width=0, min_height=0)
    path.write_text(yaml.safe_dump(template, sort_keys=False), encoding="utf-8")


def stream_events(genhook: Genhook, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The job's SSE stream read to its end: (event, data) in order."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    with genhook.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=120) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_product_image_through_serve_on_diffusers(
    model_dir: Path, tmp_path: Path, receiver: Receiver, db_kind: str
) -> None:
    genhook = Genhook(
        tmp_path / "g",
        database=db_kind,
        GENHOOK_IMAGE_BACKEND="diffusers",
        GENHOOK_DIFFUSERS_MODEL_DIR=str(model_dir),
        GENHOOK_DIFFUSERS_DEVICE="cpu",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        OMP_NUM_THREADS="1",
    )
    try:
        small_product_image(genhook.tmp / "flows")
        genhook.serve(workers=1)
        sample = sorted((SAMPLES / "product-image").glob("*.json"))[0]
        body = {**json.loads(sample.read_text(encoding="utf-8")), "callback_url": receiver.url}
        answer = genhook.trigger("product-image", body)
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        events = stream_events(genhook, job_id)
        names = [name for name, _ in events]
        assert names[0] == "queued" and names[-1] == "succeeded" and "running" in names, names
        progress = [data["progress"] for name, data in events if name == "progress"]
        assert progress, f"no progress event on the stream: {names}"
        steps = [p for p in progress if p["total"] == STEPS]
        assert steps, progress  # the pipeline's own steps (the load reports its own)
        assert all(1 <= p["step"] <= STEPS for p in steps)
        assert [p["step"] for p in steps] == sorted(p["step"] for p in steps)
        assert names.index("running") < names.index("progress") < len(names) - 1

        (call,) = receiver.wait_job(job_id, timeout=120)
        payload = verify(genhook.secret, call)
        assert payload["status"] == "success", payload["error"]
        assert payload["metadata"]["model_id"] == "diffusers/tiny-sd"
        assert payload["external_id"] == body["product_id"]
        assert payload["outputs"]
        for output in payload["outputs"]:
            got = httpx.get(output["asset_url"], timeout=30)
            assert got.status_code == 200 and len(got.content) == output["bytes"]
            with Image.open(io.BytesIO(got.content)) as image:
                image.load()
                assert image.size == (output["width"], output["height"])
                assert np.asarray(image.convert("RGB")).std() > 1.0  # not a flat picture
        assert events[-1][1]["result"] == payload
    finally:
        genhook.close()
