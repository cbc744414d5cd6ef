"""Acceptance: product-video through a real `genhook serve` on a video engine, chosen by
GENHOOK_VIDEO_BACKEND alone (replicate, fal, then comfyui), against that engine's faithful fake
(each engine's video protocol end to end: Replicate's prediction with one video URL as its
output, fal's queue with ``{"video": {"url"}}`` as its result, ComfyUI's Wan graph on
``/prompt`` with SaveVideo's MP4 in ``/history`` and fetched from ``/view``). A signed
callback verified with the independent standardwebhooks library; every MP4 and poster fetched
over HTTP from the URLs the payload gives and decoded with PyAV and Pillow; duration, fps and
poster right; the job charged the pricing file's per_video_second for the seconds the engine
made; the key nowhere in a payload, a job or a log.

The fakes make 64x48 clips at 12 fps lasting 1 s whatever was asked (for speed, as Wan makes
its own sizes): each preset is scaled from the clip, and the 12 fps where 24 were asked is
delivered with a quality warning naming fps (product-video's policy is deliver_with_warning).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import httpx
import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from genhook.contract.schema import completion_schema
from tests.acceptance.harness import Genhook, Receiver, verify
from tests.fake_fal import FAKE_KEY as FAL_KEY
from tests.fake_fal import FakeFal
from tests.fake_replicate import FAKE_TOKEN, FakeReplicate
from tests.test_video_pipeline import SMALL, TRIGGER, shrink, top_level_boxes

SCHEMA = Draft202012Validator(completion_schema())
PRICE = {"replicate": 2.5, "fal": 3.25}
"""Credits per video second in the tests' pricing file (the shipped file says 10 for both)."""
SHIPPED_PRICES = {
    "replicate": '  "*": {per_image: 1.0, per_video_second: 10.0}',
    "fal": '  "*": {per_image: 1.0, per_video_second: 10.0}',
}
CLIP_SECONDS = 1.0
"""The fakes' clip (tests/fake_replicate.py tiny_mp4: 12 frames at 12 fps)."""


@contextlib.contextmanager
def video_engine(name: str) -> Iterator[tuple[dict[str, str], str, FakeReplicate | FakeFal]]:
    """The fake ``name`` running, the settings that point genhook at it, and its secret."""
    if name == "replicate":
        with FakeReplicate(run_seconds=0.2) as replicate:
            yield (
                {
                    "GENHOOK_REPLICATE_BASE_URL": replicate.base_url,
                    "GENHOOK_REPLICATE_API_TOKEN": FAKE_TOKEN,
                },
                FAKE_TOKEN,
                replicate,
            )
    else:
        with FakeFal(queue_seconds=0.1, run_seconds=0.2) as fal:
            yield {"GENHOOK_FAL_BASE_URL": fal.base_url, "GENHOOK_FAL_KEY": FAL_KEY}, FAL_KEY, fal


def decoded_video(data: bytes, path: Path) -> tuple[str, str, tuple[int, int], float, float, int]:
    """(codec, pixel format, size, average rate, seconds, frames) of the MP4, decoded."""
    path.write_bytes(data)
    with av.open(str(path)) as container:
        (stream,) = container.streams.video
        frames = list(container.decode(stream))
        assert frames, "no frame decodes"
        seconds = float(frames[-1].time - frames[0].time) + 1 / float(stream.average_rate)
        return (
            stream.codec_context.name,
            stream.codec_context.pix_fmt,
            (frames[0].width, frames[0].height),
            float(stream.average_rate),
            seconds,
            len(frames),
        )


def check_delivered(
    payload: dict[str, Any], tmp_path: Path, *, fps: float, frames: int, seconds: float
) -> None:
    """Every output's MP4 and poster fetched from the payload's URLs and decoded: H.264
    yuv420p at the preset's size, ``+faststart``, ``fps``, ``frames`` frames lasting
    ``seconds``; the poster a JPEG frame of the clip at the same size."""
    for index, output in enumerate(payload["outputs"]):
        size = SMALL[output["platform_code"]]
        got = httpx.get(output["asset_url"], timeout=30)
        assert got.status_code == 200, output["asset_url"]
        assert got.headers["content-type"] == "video/mp4"
        assert len(got.content) == output["bytes"]
        boxes = top_level_boxes(got.content)
        assert boxes.index("moov") < boxes.index("mdat")  # +faststart
        codec, pix_fmt, frame_size, rate, length, count = decoded_video(
            got.content, tmp_path / f"{index}.mp4"
        )
        assert (codec, pix_fmt, frame_size) == ("h264", "yuv420p", size)
        assert (output["width"], output["height"]) == size
        assert output["asset_type"] == "video" and output["format"] == "mp4"
        assert rate == pytest.approx(output["fps"]) and output["fps"] == fps
        assert count == frames
        assert length == pytest.approx(seconds, abs=0.01)
        assert output["duration_seconds"] == pytest.approx(seconds, abs=0.01)
        poster = httpx.get(output["poster_url"], timeout=30)
        assert poster.status_code == 200
        assert poster.headers["content-type"] == "image/jpeg"
        with Image.open(BytesIO(poster.content)) as image:
            image.load()
            assert image.format == "JPEG" and image.size == size
            low, high = image.convert("L").getextrema()
            assert high - low > 40, "the poster is a frame of the clip, not a flat one"


@pytest.mark.parametrize("name", ["replicate", "fal"])
def test_product_video_through_serve_on_a_hosted_video_model(
    name: str, tmp_path: Path, receiver: Receiver, db_kind: str
) -> None:
    with video_engine(name) as (env, secret, fake):
        genhook = Genhook(tmp_path / "g", database=db_kind, GENHOOK_VIDEO_BACKEND=name, **env)
        try:
            shrink(genhook.tmp / "flows", genhook.tmp / "presets")
            pricing = genhook.tmp / "presets" / "pricing.yaml"
            text = pricing.read_text(encoding="utf-8")
            line = f"{name}:\n{SHIPPED_PRICES[name]}\n"
            assert line in text, "the shipped pricing file changed: update SHIPPED_PRICES"
            ours = f'{name}:\n  "*": {{per_image: 1.0, per_video_second: {PRICE[name]}}}\n'
            pricing.write_text(text.replace(line, ours), encoding="utf-8")
            genhook.serve(workers=1)
            body = {**TRIGGER, "target_platform": "short_video_pack", "callback_url": receiver.url}
            answer = genhook.trigger("product-video", body)
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job_id"]
            (call,) = receiver.wait_job(job_id, timeout=180)
            assert secret not in call.body.decode()
            payload = verify(genhook.secret, call)
            SCHEMA.validate(payload)
            assert payload["status"] == "success", payload["error"]
            metadata = payload["metadata"]
            assert metadata["model_id"].startswith(f"{name}/"), metadata
            assert "wan" in metadata["model_id"]  # the engine's video model, not its image one
            warning = payload["quality_warning"]
            assert warning is not None and "fps" in {c["check"] for c in warning["failed_checks"]}
            # one tall clip covers both presets; the fps check fails and is retried once, so
            # each attempt's clip is charged: 1 s at the file's price a second, each
            generations = metadata["generations"]
            assert generations in (1, 2)
            assert metadata["credit_cost"] == pytest.approx(
                generations * CLIP_SECONDS * PRICE[name]
            )
            asked = fake.recorded("POST")
            made = [r for r in asked if isinstance(r.json, dict)]
            assert len(made) == generations
            inputs = [r.json.get("input", r.json) for r in made]
            assert all(i["num_frames"] == 24 and i["frames_per_second"] == 24 for i in inputs)
            if name == "fal":  # the queue: status polled (with logs), then the result read
                gets = [urlsplit(r.path) for r in fake.recorded("GET", "/fal-ai/wan/requests/")]
                assert any(g.path.endswith("/status") and "logs=1" in g.query for g in gets)
                results = [g for g in gets if not g.path.endswith("/status")]
                assert len(results) == generations
            assert [o["platform_code"] for o in payload["outputs"]] == [
                "tiktok_video",
                "instagram_reel",
            ]
            # the engine's 12 fps clip is encoded at its own rate, 1 s long
            check_delivered(payload, tmp_path, fps=12.0, frames=12, seconds=CLIP_SECONDS)
            job = genhook.job(job_id)
            assert job["status"] == "succeeded" and job["result"] == payload
            assert secret not in json.dumps(job)
            assert secret not in genhook.logs()
        finally:
            genhook.close()


COMFYUI_PRICE = 1.5
"""Credits per video second of comfyui in the test's pricing file (the shipped file says 0)."""


def test_product_video_through_serve_on_comfyui(
    tmp_path: Path, receiver: Receiver, db_kind: str
) -> None:
    """GENHOOK_VIDEO_BACKEND=comfyui against the faithful fake ComfyUI: the shipped Wan 2.1
    text-to-video graph filled (1 s at 24 fps asked: ``length`` 25, the least 4k + 1 frames
    that hold 24), followed on the websocket, its SaveVideo MP4 fetched from ``/view``; every
    preset's MP4 and poster fetched over HTTP and decoded; 25 frames at 24 fps pass video QC
    (no warning); charged the pricing file's per_video_second for the 25/24 s made."""
    from tests.fake_comfyui import FakeComfyUI

    with FakeComfyUI() as fake:
        genhook = Genhook(
            tmp_path / "g",
            database=db_kind,
            GENHOOK_VIDEO_BACKEND="comfyui",
            GENHOOK_COMFYUI_URL=fake.url,
        )
        try:
            shrink(genhook.tmp / "flows", genhook.tmp / "presets")
            pricing = genhook.tmp / "presets" / "pricing.yaml"
            text = pricing.read_text(encoding="utf-8")
            line = 'comfyui:\n  "*": {per_image: 0, per_video_second: 0}\n'
            assert line in text, "the shipped pricing file changed: update this test"
            ours = f'comfyui:\n  "*": {{per_image: 0, per_video_second: {COMFYUI_PRICE}}}\n'
            pricing.write_text(text.replace(line, ours), encoding="utf-8")
            genhook.serve(workers=1)
            body = {**TRIGGER, "target_platform": "short_video_pack", "callback_url": receiver.url}
            answer = genhook.trigger("product-video", body)
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job_id"]
            (call,) = receiver.wait_job(job_id, timeout=180)
            payload = verify(genhook.secret, call)
            SCHEMA.validate(payload)
            assert payload["status"] == "success", payload["error"]
            assert payload["quality_warning"] is None, payload["quality_warning"]
            metadata = payload["metadata"]
            assert metadata["model_id"] == "comfyui/wan2.1_t2v_1.3B_fp16.safetensors"
            assert metadata["generations"] == 1
            assert metadata["credit_cost"] == pytest.approx(25 / 24 * COMFYUI_PRICE, abs=0.01)
            (prompt,) = [r for r in fake.requests if r.method == "POST" and r.path == "/prompt"]
            graph = prompt.json["prompt"]
            assert graph["40"]["class_type"] == "EmptyHunyuanLatentVideo"
            assert graph["40"]["inputs"]["length"] == 25 and graph["49"]["inputs"]["fps"] == 24.0
            assert "Ceramic Pour-Over Mug" in graph["6"]["inputs"]["text"]
            socket = next(r for r in fake.requests if r.path == "/ws")
            assert prompt.json["client_id"] == socket.query["clientId"]
            (view,) = [r.query for r in fake.requests if r.path == "/view"]
            assert view["subfolder"] == "video" and view["filename"].endswith(".mp4")
            assert [o["platform_code"] for o in payload["outputs"]] == [
                "tiktok_video",
                "instagram_reel",
            ]
            check_delivered(payload, tmp_path, fps=24.0, frames=25, seconds=25 / 24)
            job = genhook.job(job_id)
            assert job["status"] == "succeeded" and job["result"] == payload
        finally:
            genhook.close()
