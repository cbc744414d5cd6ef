"""product-video end to end: through `genhook run` and through `genhook serve` with a real
callback, every MP4 decoded with PyAV (size, length, codec h264, yuv420p, fps, faststart: the
moov box before mdat) and every poster decoded; dry-run prices per video second equal to what a
run charges; video presets refused for image outputs and the other way round.

The clips are kept small for two cores: the shipped workflow and presets are copied with the
generate node's pixel budget and the video presets' sizes shrunk (the same codes, bundles and
CRFs), and the clips asked for last one second.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import av
import httpx
import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from genhook.catalog import Catalog
from genhook.contract.schema import completion_schema
from genhook.errors import InvalidInput, TemplateError
from genhook.presets import Presets, load_presets
from genhook.pricing import load_pricing
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.template import load_workflow
from tests.acceptance.harness import Genhook, Receiver, verify
from tests.conftest import ROOT, SAMPLES, CliResult
from tests.fake_replicate import FAKE_TOKEN, FakeReplicate

SCHEMA = Draft202012Validator(completion_schema())
SMALL = {
    "tiktok_video": (180, 320),
    "instagram_reel": (180, 320),
    "instagram_video_square": (180, 180),
    "instagram_video_portrait": (176, 220),
    "youtube_video": (320, 180),
}
"""The video presets' sizes in the tests: the shipped ratios (9:16, 1:1, 4:5, 16:9), small."""
BUDGET = ("width: 1080\n      height: 1080", "width: 160\n      height: 160")
"""The shipped generate node's pixel budget, and the tests' (the classes grow to the presets)."""
QC_SIZE = ("min_width: 480\n      min_height: 480", "min_width: 64\n      min_height: 64")
"""The shipped quality check's least clip size, and the tests' (their clips are small)."""
TRIGGER = {
    "product_id": "SKU-482",
    "product_name": "Ceramic Pour-Over Mug",
    "product_category": "kitchen",
    "target_style": "minimal",
    "target_platform": "video_pack",
    "duration_seconds": 1,
}


def shrink(flows: Path, presets: Path) -> None:
    """The shipped product-video workflow and video presets in ``flows`` and ``presets``
    (copies), made small."""
    workflow = flows / "product-video.yaml"
    text = workflow.read_text(encoding="utf-8")
    assert BUDGET[0] in text, "the shipped product-video budget changed: update BUDGET"
    assert QC_SIZE[0] in text, "the shipped product-video QC sizes changed: update QC_SIZE"
    workflow.write_text(text.replace(*BUDGET).replace(*QC_SIZE), encoding="utf-8")
    platforms = presets / "platforms.yaml"
    lines = platforms.read_text(encoding="utf-8").splitlines(keepends=True)
    for code, (w, h) in SMALL.items():
        (index,) = [i for i, line in enumerate(lines) if line.startswith(f"  {code}:")]
        lines[index] = re.sub(r"width: \d+, +height: \d+", f"width: {w}, height: {h}", lines[index])
    platforms.write_text("".join(lines), encoding="utf-8")
    assert all(
        (p.width, p.height) == SMALL[code]
        for code, p in load_presets(presets).platforms.items()
        if p.is_video
    )


def small_install(tmp_path: Path, pricing: str | None = None) -> dict[str, str]:
    """A copy of the shipped workflows and presets, product-video made small; its variables."""
    flows, presets = tmp_path / "flows", tmp_path / "presets"
    shutil.copytree(ROOT / "workflows", flows)
    shutil.copytree(ROOT / "presets", presets)
    shrink(flows, presets)
    if pricing is not None:
        (presets / "pricing.yaml").write_text(textwrap.dedent(pricing), encoding="utf-8")
    return {"GENHOOK_WORKFLOWS_DIR": str(flows), "GENHOOK_PRESETS_DIR": str(presets)}


def path_of(url: str) -> Path:
    parts = urlsplit(url)
    assert parts.scheme == "file"
    return Path(unquote(parts.path))


def top_level_boxes(data: bytes) -> list[str]:
    """The MP4's top-level box types in file order (ISO/IEC 14496-12 section 4.2: a 32-bit
    size, the type; size 1: a 64-bit size follows; size 0: to the end of the file)."""
    boxes, at = [], 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[at + 8 : at + 16], "big")
        elif size == 0:
            size = len(data) - at
        assert size >= 8, f"a box of {size} bytes at {at}"
        boxes.append(kind)
        at += size
    assert at == len(data), "the boxes end where the file does"
    return boxes


def check_mp4(
    data: bytes, path: Path, output: dict[str, Any], preset_size: tuple[int, int]
) -> None:
    """Decode the MP4 (written at ``path``) with PyAV and hold it to its payload entry."""
    boxes = top_level_boxes(data)
    assert boxes[0] == "ftyp" and boxes.index("moov") < boxes.index("mdat"), boxes  # +faststart
    with av.open(str(path)) as container:
        (stream,) = container.streams.video
        assert not container.streams.audio
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == preset_size
        assert float(stream.average_rate) == 24.0
        frames = [f for f in container.decode(stream)]
        assert len(frames) == 24
        assert (frames[0].width, frames[0].height) == preset_size
        seconds = float(frames[-1].time - frames[0].time) + 1 / 24
        assert seconds == pytest.approx(1.0, abs=0.01)
        assert container.duration is not None
        assert container.duration / 1e6 == pytest.approx(1.0, abs=0.05)
    assert (output["width"], output["height"]) == preset_size
    assert output["duration_seconds"] == pytest.approx(1.0, abs=0.01)
    assert output["fps"] == 24.0
    assert output["format"] == "mp4" and output["asset_type"] == "video"
    assert output["bytes"] == len(data) and output["sha256"] == hashlib.sha256(data).hexdigest()


def check_poster(data: bytes, preset_size: tuple[int, int]) -> None:
    from io import BytesIO

    with Image.open(BytesIO(data)) as poster:
        poster.load()
        assert poster.format == "JPEG" and poster.size == preset_size
        low, high = poster.convert("L").getextrema()
        assert high - low > 40, "the poster is a picture, not a flat frame"


def test_product_video_through_genhook_run(
    tmp_path: Path, genhook: Callable[..., CliResult]
) -> None:
    """video_pack: four MP4s (9:16, 1:1, 4:5, 16:9) from four clips, one per aspect class,
    each with its poster written beside it and named in poster_url (not an output itself)."""
    env = small_install(tmp_path)
    out = tmp_path / "out"
    result = genhook(
        "run", "product-video", "--input", json.dumps(TRIGGER), "--out", str(out), env=env
    )
    assert result.code == 0, result.stderr + result.stdout
    payload = result.json
    SCHEMA.validate(payload)
    assert payload["status"] == "success" and payload["quality_warning"] is None
    assert payload["external_id"] == "SKU-482"
    codes = [o["platform_code"] for o in payload["outputs"]]
    assert codes == [
        "instagram_reel",
        "instagram_video_square",
        "instagram_video_portrait",
        "youtube_video",
    ]
    assert payload["metadata"]["generations"] == 4  # tall, square, portrait, wide
    assert payload["metadata"]["model_id"] == "procedural/procedural-v1"
    assert "slow push-in" in payload["metadata"]["prompt_used"]
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 8  # an MP4 and a poster per preset
    for output in payload["outputs"]:
        size = SMALL[output["platform_code"]]
        path = path_of(output["asset_url"])
        assert path.name == output["filename_suggestion"]
        assert path.name.endswith(f"-{size[0]}x{size[1]}.mp4")
        check_mp4(path.read_bytes(), path, output, size)
        poster = path_of(output["poster_url"])
        assert poster.parent == path.parent and poster.name.endswith(".jpg")
        assert poster.name not in {o["filename_suggestion"] for o in payload["outputs"]}
        check_poster(poster.read_bytes(), size)
        assert output["alt_text"] == payload["seo"]["alt_text"] and output["alt_text"]


def test_product_video_sample_is_valid_and_priced_per_video_second(tmp_path: Path) -> None:
    """The shipped sample validates; with procedural priced at 0.5 a video second, the dry run
    says 4 clips x 1 s x 0.5 (and one QC retry each at worst), the fast estimate says the same,
    and `genhook run` is charged the expected figure for what it made."""
    pricing = 'procedural:\n  "*": {per_image: 1.0, per_video_second: 0.5}\n'
    env = small_install(tmp_path, pricing)
    presets = load_presets(Path(env["GENHOOK_PRESETS_DIR"]))
    prices = load_pricing(Path(env["GENHOOK_PRESETS_DIR"]) / "pricing.yaml")
    catalog = Catalog.load(Path(env["GENHOOK_WORKFLOWS_DIR"]), presets, prices)
    wf = catalog.workflow("product-video")
    for sample in sorted((SAMPLES / "product-video").glob("*.json")):
        body = json.loads(sample.read_text(encoding="utf-8"))
        checked = catalog.validate(wf, body).input
        seconds = float(checked["duration_seconds"])
        plan = catalog.plan(wf, checked)
        classes = len({o["source"] for o in plan["outputs"]})
        assert plan["credit_estimate"]["expected"] == pytest.approx(classes * seconds * 0.5)
    checked = catalog.validate(wf, TRIGGER).input
    plan = catalog.plan(wf, checked)
    # at worst the QC retry regenerates as much as the step made (the dearest step, 2.0)
    assert plan["credit_estimate"] == {"expected": 2.0, "max": 4.0}
    assert catalog.estimate(wf, checked) == 4.0
    assert catalog.estimate(wf, checked, worst=False) == 2.0
    (step,) = [s for s in plan["steps"] if s["kind"] == "generate"]
    assert step["asset_kind"] == "video"
    assert (step["duration_seconds"], step["fps"]) == (1.0, 24.0)
    assert {o["platform_code"]: o["asset_type"] for o in plan["outputs"]} == {
        code: "video"
        for code in (
            "instagram_reel",
            "instagram_video_square",
            "instagram_video_portrait",
            "youtube_video",
        )
    }


def test_run_is_charged_the_dry_runs_expected_credits(
    tmp_path: Path, genhook: Callable[..., CliResult]
) -> None:
    pricing = 'procedural:\n  "*": {per_image: 1.0, per_video_second: 0.5}\n'
    env = small_install(tmp_path, pricing)
    trigger = {**TRIGGER, "target_platform": "instagram_video_square", "duration_seconds": 2}
    result = genhook("run", "product-video", "--input", json.dumps(trigger), env=env)
    assert result.code == 0, result.stderr
    payload = result.json
    assert payload["metadata"]["credit_cost"] == 1.0  # one 2 s clip at 0.5 a second
    (output,) = payload["outputs"]
    assert output["duration_seconds"] == pytest.approx(2.0, abs=0.01)


VIDEO_ON_IMAGES = textwrap.dedent(
    """\
    id: mixed
    input:
      required: [name]
      properties:
        name: {type: string}
    nodes:
      clip:
        kind: generate
        with:
          kind: KIND
          prompt: ${input.name}
          platforms: PLATFORMS
          aspect_classes: per_class
      export:
        kind: export
        with:
          image: ${clip.renders}
          platforms: PLATFORMS
    outputs:
      assets:
        - ${export.assets}
    """
)


@pytest.mark.parametrize(
    ("kind", "platforms", "words"),
    [
        ("video", "instagram_feed", "image presets ['instagram_feed'] for a video output"),
        ("video", "social_pack", "image presets ['instagram_feed', 'instagram_portrait'"),
        ("image", "tiktok_video", "video presets ['tiktok_video'] for an image output"),
        ("image", "video_pack", "video presets ['instagram_reel', 'instagram_video_square'"),
    ],
)
def test_a_preset_of_the_other_kind_is_refused_when_the_template_loads(
    tmp_path: Path, presets: Presets, nodes: NodeRegistry, kind: str, platforms: str, words: str
) -> None:
    path = tmp_path / "mixed.yaml"
    text = VIDEO_ON_IMAGES.replace("KIND", kind).replace("PLATFORMS", platforms)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        load_workflow(path, presets, nodes)
    problems = caught.value.problems
    assert any(p.where == "nodes.clip.with.platforms" and words in p.message for p in problems), [
        (p.where, p.message) for p in problems
    ]


def test_a_trigger_choosing_the_other_kind_is_refused_at_the_edge(engine: Any) -> None:
    """product-image lists image targets only, product-video video targets only: a trigger
    naming the other kind is refused before anything runs, naming target_platform."""
    image = engine.workflow("product-image")
    assert "tiktok_video" not in image.input_schema["properties"]["target_platform"]["enum"]
    assert "video_pack" not in image.input_schema["properties"]["target_platform"]["enum"]
    body = {**TRIGGER, "target_platform": "tiktok_video"}
    del body["duration_seconds"]
    with pytest.raises(InvalidInput) as caught:
        engine.catalog.validate(image, body)
    assert caught.value.code.value == "unknown_platform"
    assert caught.value.field == "target_platform"
    video = engine.workflow("product-video")
    props = video.input_schema["properties"]["target_platform"]
    assert props["default"] == "video_pack"
    assert set(props["enum"]) == set(engine.presets.video_targets)
    with pytest.raises(InvalidInput) as caught:
        engine.catalog.validate(video, {**TRIGGER, "target_platform": "instagram_feed"})
    assert caught.value.field == "target_platform"
    assert caught.value.code.value == "unknown_platform"


def test_product_video_through_the_service(tmp_path: Path) -> None:
    """A real `genhook serve`: trigger, 202, a signed callback whose every MP4 and poster are
    fetched over HTTP (video/mp4 and image/jpeg) and decoded; the job's result is the payload."""
    service = Genhook(tmp_path / "service")
    receiver = Receiver().start()
    try:
        shrink(service.tmp / "flows", service.tmp / "presets")
        service.serve(workers=1)
        trigger = {**TRIGGER, "target_platform": "short_video_pack", "callback_url": receiver.url}
        answer = service.trigger("product-video", trigger)
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        (call,) = receiver.wait_job(job_id, timeout=240)
        payload = verify(service.secret, call)
        SCHEMA.validate(payload)
        assert payload["status"] == "success", payload["error"]
        assert [o["platform_code"] for o in payload["outputs"]] == [
            "tiktok_video",
            "instagram_reel",
        ]
        assert payload["metadata"]["generations"] == 1  # both are cut from the one tall clip
        for index, output in enumerate(payload["outputs"]):
            got = httpx.get(output["asset_url"], timeout=30)
            assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
            path = tmp_path / f"{index}.mp4"
            path.write_bytes(got.content)
            check_mp4(got.content, path, output, SMALL[output["platform_code"]])
            poster = httpx.get(output["poster_url"], timeout=30)
            assert poster.status_code == 200 and poster.headers["content-type"] == "image/jpeg"
            check_poster(poster.content, SMALL[output["platform_code"]])
        job = service.job(job_id)
        assert job["status"] == "succeeded" and job["result"] == payload
    finally:
        receiver.stop()
        service.close()


def clip_request(**changes: Any) -> Any:
    from genhook.backends.base import GenerationRequest

    fields: dict[str, Any] = {
        "prompt": "a mug",
        "negative_prompt": "",
        "width": 120,
        "height": 214,
        "seed": 7,
        "model": "procedural-v1",
        "subject": "Mug",
        "kind": "video",
        "duration_seconds": 1.0,
        "fps": 12.0,
    }
    return GenerationRequest(**{**fields, **changes})


def test_the_procedural_clip_is_what_it_says(tmp_path: Path) -> None:
    """A real clip of the asked length and rate, at an even size (214 -> 214, 120 -> 120),
    moving, reporting progress by frames; its poster is one of its frames at its size."""
    from genhook.backends.base import Control, Progress
    from genhook.backends.procedural import ProceduralBackend
    from genhook.media.video_qc import measure_video

    seen: list[Progress] = []
    result = ProceduralBackend().generate(
        clip_request(), Control(on_progress=seen.append, workdir=tmp_path)
    )
    clip = result.video
    assert clip is not None and clip.path.parent == tmp_path and not clip.has_audio
    assert (clip.width, clip.height, clip.fps, clip.frames) == (120, 214, 12.0, 12)
    assert clip.duration_seconds == pytest.approx(1.0)
    assert result.pixels.shape == (214, 120, 3)
    m = measure_video(clip.path)
    assert (m.width, m.height, m.frames, m.fps) == (120, 214, 12, 12.0)
    assert m.frozen_seconds == 0.0 and m.black_share == 0.0
    assert seen[-1].step == seen[-1].total == 12 and len(seen) >= 2


def test_the_procedural_clip_stops_on_cancel_and_refuses_what_it_cannot_make(
    tmp_path: Path,
) -> None:
    from genhook.backends.base import Control
    from genhook.backends.procedural import ProceduralBackend
    from genhook.errors import GenhookError

    backend = ProceduralBackend()
    with pytest.raises(GenhookError) as caught:
        backend.generate(clip_request(), Control(is_cancelled=lambda: True, workdir=tmp_path))
    assert caught.value.code.value == "cancelled"
    for too_much in ({"duration_seconds": 61.0}, {"fps": 120.0}):
        with pytest.raises(GenhookError) as caught:
            backend.generate(clip_request(**too_much), Control(workdir=tmp_path))
        assert caught.value.code.value == "backend_rejected"
    assert backend.kinds == frozenset({"image", "video"})


def test_the_published_schema_requires_the_video_fields_on_video_outputs() -> None:
    """A video output without duration_seconds, fps or poster_url is invalid under the
    published schema and refused by the model; an image output carries none of them."""
    import jsonschema

    from genhook.contract.completion import OutputAsset

    video = {
        "asset_url": "http://example.test/assets/job_1/a.mp4",
        "asset_type": "video",
        "format": "mp4",
        "width": 1080,
        "height": 1920,
        "platform_code": "instagram_reel",
        "bytes": 10,
        "sha256": "0" * 64,
        "alt_text": "a",
        "filename_suggestion": "a.mp4",
        "caption": "c",
        "duration_seconds": 4.0,
        "fps": 24.0,
        "poster_url": "http://example.test/assets/job_1/a-poster.jpg",
    }
    schema = {**completion_schema(), "$ref": "#/$defs/OutputAsset"}
    for key in ("allOf", "required", "properties"):
        schema.pop(key, None)
    jsonschema.validate(video, schema)
    assert OutputAsset.model_validate(video).model_dump(mode="json") == video
    for missing in ("duration_seconds", "fps", "poster_url"):
        partial = {k: v for k, v in video.items() if k != missing}
        with pytest.raises(jsonschema.ValidationError, match=missing):
            jsonschema.validate(partial, schema)
        with pytest.raises(ValueError, match=missing):
            OutputAsset.model_validate(partial)
    image = {k: v for k, v in video.items() if k not in ("duration_seconds", "fps", "poster_url")}
    image.update(asset_type="image", format="jpeg")
    jsonschema.validate(image, schema)
    assert OutputAsset.model_validate(image).model_dump(mode="json") == image
    with pytest.raises(ValueError, match="an image output carries no fps"):
        OutputAsset.model_validate({**image, "fps": 24.0})


def test_product_video_on_a_hosted_video_model(
    tmp_path: Path, genhook: Callable[..., CliResult]
) -> None:
    """GENHOOK_VIDEO_BACKEND=replicate alone moves product-video onto a hosted video model
    (the fake's clips: 64x48 at 12 fps for 1 s): every preset is encoded from its clip and
    decoded, and the clip's 12 fps where 24 were asked is delivered with a quality_warning
    that says so (the policy is deliver_with_warning), never as if it passed."""
    env = small_install(tmp_path)
    with FakeReplicate(run_seconds=0.05) as fake:
        env |= {
            "GENHOOK_VIDEO_BACKEND": "replicate",
            "GENHOOK_REPLICATE_BASE_URL": fake.base_url,
            "GENHOOK_REPLICATE_API_TOKEN": FAKE_TOKEN,
            "GENHOOK_DATA_DIR": str(tmp_path / "var"),
        }
        out = tmp_path / "out"
        trigger = json.dumps({**TRIGGER, "target_platform": "short_video_pack"})
        result = genhook("run", "product-video", "--input", trigger, "--out", str(out), env=env)
    assert result.code == 0, result.stderr + result.stdout
    payload = result.json
    SCHEMA.validate(payload)
    assert payload["status"] == "success"
    assert payload["metadata"]["model_id"].startswith("replicate/")
    checks = {c["check"] for c in payload["quality_warning"]["failed_checks"]}
    assert "fps" in checks
    assert FAKE_TOKEN not in result.stdout + result.stderr
    assert [o["platform_code"] for o in payload["outputs"]] == ["tiktok_video", "instagram_reel"]
    for output in payload["outputs"]:
        with av.open(str(path_of(output["asset_url"]))) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert (stream.codec_context.width, stream.codec_context.height) == SMALL[
                output["platform_code"]
            ]
        assert path_of(output["poster_url"]).is_file()
