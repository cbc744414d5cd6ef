"""Per-aspect-class generation: every crop keeps the whole subject and title, read from pixels.

The shipped ``product-image`` workflow renders ``social_pack`` for "Linen Shirt"; each decoded
output is located in the image it was cut from (template matching), and the subject's and
title's boxes that the composition reports for that image must lie inside the crop. The crop
shares, the salience check, the dry run's classes and costs and the template option are checked
too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from genhook.backends.base import BackendRegistry, GenerationResult
from genhook.backends.openai_images import OpenAIImagesBackend
from genhook.backends.procedural import ProceduralBackend
from genhook.config import OpenAISettings
from genhook.engine import Engine
from genhook.errors import TemplateError
from genhook.media import Pixels
from genhook.media.aspect import (
    CLASSES,
    MAX_CROP_SHARE,
    crop_share,
    nearest_class,
    plan_frames,
)
from genhook.media.procedural.compose import Composition, compose
from genhook.media.saliency import MIN_KEPT, kept_extent, salience
from genhook.presets import PlatformPreset, Presets
from genhook.sinks import DirectorySink
from genhook.workflow.inputs import check_trigger
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.result import Asset, RunResult
from genhook.workflow.template import parse_workflow
from tests.fake_openai import FAKE_API_KEY, FakeOpenAI
from tests.fakes import SCRIPTED_PRICING, ScriptedBackend

Box = tuple[float, float, float, float]
LINEN = {
    "product_id": "SKU-123",
    "product_name": "Linen Shirt",
    "product_category": "menswear",
    "target_style": "lifestyle",
    "target_platform": "social_pack",
}


def run(
    engine: Engine, workflow: str, trigger: dict[str, Any], out: Path
) -> tuple[dict[str, Any], RunResult]:
    wf = engine.workflow(workflow)
    outcome = engine.execute(wf, check_trigger(wf, trigger).input, DirectorySink(out))
    assert outcome.result is not None, outcome.payload.to_json()["error"]
    return outcome.payload.to_json(), outcome.result


def decoded(asset: Asset) -> Pixels:
    return np.asarray(Image.open(io.BytesIO(asset.data)).convert("RGB"))


def composition_of(result: GenerationResult) -> Composition:
    """The composition behind a procedural generation, re-rendered from its request; the same
    pixels prove that its boxes describe that very image."""
    req = result.request
    assert req.style is not None and req.frame is not None
    made = compose(
        prompt=req.prompt,
        subject=req.subject,
        palette=req.style.palette,
        lighting=req.style.lighting,
        width=req.width,
        height=req.height,
        seed=req.seed,
        label=f"procedural render · seed {req.seed}",
        on_white=req.frame.on_white,
        safe=(req.frame.safe_x, req.frame.safe_y),
    )
    assert np.array_equal(made.pixels, result.pixels)
    return made


def source_of(result: RunResult, preset: PlatformPreset) -> GenerationResult:
    (source,) = [
        g
        for g in result.generations
        if g.request.frame is not None
        and g.request.frame.aspect == nearest_class(preset.width, preset.height)
        and g.request.frame.on_white == preset.on_white
    ]
    return source


@dataclass(frozen=True)
class Located:
    box: Box  # the crop, in the source's pixels
    score: float  # normalised correlation of the match


def locate(output: Pixels, source: Pixels) -> Located:
    """Where in ``source`` the (cover-resized, cropped) ``output`` was cut, by template match."""
    (oh, ow), (sh, sw) = output.shape[:2], source.shape[:2]
    scale = max(ow / sw, oh / sh)
    cover = cv2.resize(source, (round(sw * scale), round(sh * scale)), interpolation=cv2.INTER_AREA)
    q = 4  # match at a quarter of the size: fast, and precise to a few pixels
    small = cv2.resize(
        cover, (cover.shape[1] // q, cover.shape[0] // q), interpolation=cv2.INTER_AREA
    )
    tmpl = cv2.resize(output, (ow // q, oh // q), interpolation=cv2.INTER_AREA)
    scores = cv2.matchTemplate(small, tmpl, cv2.TM_CCOEFF_NORMED)
    _, best, _, (x, y) = cv2.minMaxLoc(scores)
    left, top = x * q / scale, y * q / scale
    return Located((left, top, left + ow / scale, top + oh / scale), float(best))


def inside(inner: Box, outer: Box, slack: float) -> bool:
    return (
        inner[0] >= outer[0] - slack
        and inner[1] >= outer[1] - slack
        and inner[2] <= outer[2] + slack
        and inner[3] <= outer[3] + slack
    )


def test_every_shipped_preset_is_within_the_stated_crop_share(presets: Presets) -> None:
    """No shipped preset loses more than MAX_CROP_SHARE of a side from its nearest class."""
    for preset in presets.platforms.values():
        ratio = CLASSES[nearest_class(preset.width, preset.height)]
        assert max(crop_share(float(ratio), (preset.width, preset.height))) <= MAX_CROP_SHARE, (
            preset.code
        )


def test_social_pack_keeps_the_whole_subject_and_title_in_every_output(
    engine: Engine, presets: Presets, tmp_path: Path
) -> None:
    """Six outputs from four class images; each decoded output contains the subject's and the
    title's boxes of the image it was cut from, its crop share is within the bound, the
    salience check passes, and the payload carries no warning."""
    payload, result = run(engine, "product-image", LINEN, tmp_path)
    assert payload["quality_warning"] is None
    assert sorted(g.request.frame.key for g in result.generations if g.request.frame) == [
        "portrait",
        "square",
        "tall",
        "wide",
    ]
    for asset in result.assets:
        preset = presets.platforms[asset.platform_code]
        source = source_of(result, preset)
        parts = composition_of(source)
        height, width = source.pixels.shape[:2]
        assert max(crop_share((width, height), (preset.width, preset.height))) <= MAX_CROP_SHARE
        found = locate(decoded(asset), source.pixels)
        assert found.score > 0.97, (preset.code, found)
        slack = 6 * width / preset.width  # the match is precise to a few output pixels
        assert parts.title is not None
        assert inside(parts.subject, found.box, slack), (preset.code, parts.subject, found.box)
        assert inside(parts.title, found.box, slack), (preset.code, parts.title, found.box)
        box = found.box
        fractions = (box[0] / width, box[1] / height, box[2] / width, box[3] / height)
        assert kept_extent(salience(source.pixels), fractions) >= MIN_KEPT, preset.code


SINGLE = dedent(
    """
    id: single
    input:
      required: [name]
      properties:
        name: {type: string}
    nodes:
      image:
        kind: generate
        with:
          prompt: "Product photograph of ${input.name}"
          subject: ${input.name}
          width: 2048
          height: 2048
          platforms: social_pack
          aspect_classes: single
      export:
        kind: export
        with:
          image: ${image.renders}
          platforms: social_pack
    outputs:
      assets:
        - ${export.assets}
    """
)


def test_one_image_for_all_is_allowed_and_its_lossy_crops_are_flagged(
    presets: Presets, tmp_path: Path
) -> None:
    """``aspect_classes: single`` makes one square for six presets; the wide crops cut the
    title off (their boxes are not inside, read from pixels) and the payload's quality_warning
    names exactly those outputs."""
    wf_dir = tmp_path / "wf"
    wf_dir.mkdir()
    (wf_dir / "single.yaml").write_text(SINGLE, encoding="utf-8")
    backends = BackendRegistry()
    backends.register(ProceduralBackend())
    engine = Engine.load(wf_dir, presets=presets, backends=backends)
    payload, result = run(engine, "single", {"name": "Linen Shirt"}, tmp_path / "out")
    (only,) = result.generations
    assert only.request.frame is None and only.pixels.shape == (2048, 2048, 3)
    flagged = {c["check"] for c in payload["quality_warning"]["failed_checks"]}
    assert {"salient_region.x_post", "salient_region.facebook_link"} <= flagged
    assert "salient_region.instagram_feed" not in flagged
    title = compose(
        prompt=only.request.prompt,
        subject="Linen Shirt",
        palette=["#1d3557", "#457b9d", "#a8dadc", "#f1faee"],
        lighting="softbox",
        width=2048,
        height=2048,
        seed=only.request.seed,
        label=f"procedural render · seed {only.request.seed}",
    )
    assert np.array_equal(title.pixels, only.pixels)
    x_post = next(a for a in result.assets if a.platform_code == "x_post")
    found = locate(decoded(x_post), only.pixels)
    assert found.score > 0.97
    assert title.title is not None
    lost = not inside(title.title, found.box, 0) or not inside(title.subject, found.box, 0)
    assert lost


def test_dry_run_shows_the_classes_and_their_cost_and_the_run_costs_the_same(
    presets: Presets, tmp_path: Path
) -> None:
    """With an engine at 1.5 credits an image, social_pack plans four classes (6.0 credits);
    the run makes four generations and costs 6.0."""
    wf_dir = tmp_path / "wf"
    wf_dir.mkdir()
    text = SINGLE.replace("aspect_classes: single", "aspect_classes: per_class").replace(
        "width: 2048", "backend: scripted\n      model: any\n      width: 2048"
    )
    (wf_dir / "single.yaml").write_text(text, encoding="utf-8")
    grey = np.full((256, 256, 3), 128, np.uint8)
    grey[64:192, 64:192] = (200, 40, 40)
    backend = ScriptedBackend([grey], cost=1.5)
    backends = BackendRegistry()
    backends.register(backend)
    engine = Engine.load(wf_dir, presets=presets, backends=backends, pricing=SCRIPTED_PRICING)
    wf = engine.workflow("single")
    plan = engine.plan(wf, {"name": "Linen Shirt"})
    (step,) = [s for s in plan["steps"] if s["kind"] == "generate"]
    assert step["aspect_classes"] == "per_class"
    classes = {c["class"]: c for c in step["classes"]}
    assert set(classes) == {"square", "portrait", "tall", "wide"}
    assert classes["tall"]["ratio"] == "9:16"
    assert classes["portrait"]["presets"] == ["instagram_portrait", "pinterest_pin"]
    assert all(c["credit_estimate"] == 1.5 for c in classes.values())
    assert step["generations"] == 4 and step["credit_estimate"] == pytest.approx(6.0)
    assert plan["credit_estimate"]["expected"] == pytest.approx(6.0)
    sources = {o["platform_code"]: o["source"] for o in plan["outputs"]}
    assert sources["instagram_story"] == "tall" and sources["x_post"] == "wide"
    payload, _ = run(engine, "single", {"name": "Linen Shirt"}, tmp_path / "out")
    assert payload["metadata"]["generations"] == 4
    assert payload["metadata"]["credit_cost"] == pytest.approx(6.0)
    assert [(r.width, r.height) for r in backend.requests] == [
        (c["width"], c["height"]) for c in step["classes"]
    ]


def test_class_images_cover_their_presets_at_about_the_budgeted_area(presets: Presets) -> None:
    """Each class image has about the pixel budget, at its ratio, and no preset of it needs an
    upscale."""
    every = list(presets.platforms.values())
    for planned in plan_frames(every, 2048 * 2048):
        ratio = planned.width / planned.height
        assert ratio == pytest.approx(float(planned.frame.ratio), rel=0.01)
        assert planned.width * planned.height >= 0.98 * 2048 * 2048
        for preset in planned.presets:
            assert planned.width >= preset.width and planned.height >= preset.height


@pytest.mark.parametrize(
    ("params", "where", "words"),
    [
        ("aspect_classes: per_class", "aspect_classes", "platforms"),
        ("aspect_classes: squares", "aspect_classes", "invalid value"),
        ("platforms: tiktok_vertical", "platforms", "unknown platform presets"),
    ],
)
def test_the_aspect_classes_option_is_checked_when_the_template_loads(
    presets: Presets, nodes: NodeRegistry, params: str, where: str, words: str
) -> None:
    """per_class without platforms, an unknown mode and unknown platform codes are load errors
    naming the parameter and its line."""
    text = dedent(
        f"""
        id: bad
        input:
          properties:
            name: {{type: string, default: x}}
        nodes:
          image:
            kind: generate
            with:
              prompt: "x"
              {params}
        outputs:
          assets:
            - ${{image.result}}
        """
    )
    with pytest.raises(TemplateError) as caught:
        parse_workflow(text, "bad.yaml", presets, nodes)
    (problem,) = caught.value.problems
    assert problem.where == f"nodes.image.with.{where}"
    assert words in problem.message
    assert problem.line == 11


def block_grown(box: Box, scale: float, block: int = 8) -> tuple[int, int, int, int]:
    """``box`` scaled into an output, grown by a pixel for resampling and then out to the JPEG
    block grid (an 8x8 block that holds an edge of the product rings; one all white does not)."""
    x0, y0 = (int(v * scale) - 1 for v in box[:2])
    x1, y1 = (int(np.ceil(v * scale)) + 1 for v in box[2:])
    return (
        max(0, x0 // block * block),
        max(0, y0 // block * block),
        -(-x1 // block) * block,
        -(-y1 // block) * block,
    )


def test_on_white_presets_are_pure_white_around_the_product(
    engine: Engine, presets: Presets, tmp_path: Path
) -> None:
    """amazon_main and shopify_product: every decoded pixel outside the product's bounding box
    (from the composition, which holds every pixel the product touched) is (255, 255, 255),
    and the product fills a good part of the frame."""
    trigger = {
        "product_id": "MUG-0042",
        "product_name": "Speckled Ceramic Mug",
        "product_category": "kitchenware",
        "target_style": "studio_white",
        "target_platform": "ecommerce_pack",
    }
    payload, result = run(engine, "product-image", trigger, tmp_path)
    assert payload["metadata"]["generations"] == 3  # square on white, landscape, wide
    white = [a for a in result.assets if presets.platforms[a.platform_code].on_white]
    assert sorted(a.platform_code for a in white) == ["amazon_main", "shopify_product"]
    for asset in white:
        preset = presets.platforms[asset.platform_code]
        source = source_of(result, preset)
        parts = composition_of(source)
        drawn = np.argwhere(source.pixels.min(axis=2) < 255)
        (top, left), (bottom, right) = drawn.min(axis=0), drawn.max(axis=0) + 1
        assert inside((left, top, right, bottom), parts.subject, 0)
        x0, y0, x1, y1 = parts.subject
        assert (x1 - x0) * (y1 - y0) > 0.3 * source.pixels.shape[0] * source.pixels.shape[1]
        pixels = decoded(asset)
        scale = preset.width / source.pixels.shape[1]
        bx0, by0, bx1, by1 = block_grown(parts.subject, scale)
        outside = np.ones(pixels.shape[:2], bool)
        outside[by0:by1, bx0:bx1] = False
        assert outside.mean() > 0.3
        assert (pixels[outside] == 255).all(), asset.platform_code


REMOTE = dedent(
    """
    id: remote
    input:
      required: [name, target_platform]
      properties:
        name: {type: string}
        target_platform: {x-enum-from: platforms}
    nodes:
      image:
        kind: generate
        with:
          backend: openai
          model: gpt-image-1
          prompt: "Product photograph of ${input.name}"
          subject: ${input.name}
          platforms: ${input.target_platform}
      export:
        kind: export
        with:
          image: ${image.renders}
          platforms: ${input.target_platform}
    outputs:
      assets:
        - ${export.assets}
    """
)


def test_a_remote_engine_gets_each_class_at_its_nearest_supported_size(
    presets: Presets, tmp_path: Path
) -> None:
    """Over real HTTP to a fake Images API: one request per class, each at the model's size
    nearest the class (gpt-image-1: 1024x1024, 1024x1536, 1536x1024) with a composition
    sentence; an on-white class asks for a transparent background (decoded over white); the
    job costs one image per class, as the dry run said."""
    wf_dir = tmp_path / "wf"
    wf_dir.mkdir()
    (wf_dir / "remote.yaml").write_text(REMOTE, encoding="utf-8")
    with FakeOpenAI() as fake:
        backend = OpenAIImagesBackend(OpenAISettings(base_url=fake.base_url, api_key=FAKE_API_KEY))
        backends = BackendRegistry()
        backends.register(backend)
        try:
            engine = Engine.load(wf_dir, presets=presets, backends=backends)
            trigger = {"name": "Linen Shirt", "target_platform": "social_pack"}
            plan = engine.plan(engine.workflow("remote"), trigger)
            payload, _ = run(engine, "remote", trigger, tmp_path / "social")
            sent = [r.json for r in fake.requests]
            fake.reset()
            white = {"name": "Mug", "target_platform": "amazon_main"}
            _, made = run(engine, "remote", white, tmp_path / "white")
            (on_white,) = [r.json for r in fake.requests]
        finally:
            backend.close()
    assert [b["size"] for b in sent] == ["1024x1024", "1024x1536", "1024x1536", "1536x1024"]
    assert all("Composition:" in b["prompt"] and "background" not in b for b in sent)
    assert payload["metadata"]["generations"] == 4
    assert payload["metadata"]["credit_cost"] == pytest.approx(16.0)
    assert plan["credit_estimate"]["expected"] == pytest.approx(16.0)
    assert on_white["size"] == "1024x1024" and on_white["background"] == "transparent"
    assert "pure white" in on_white["prompt"]
    (generated,) = made.generations
    assert generated.request.frame is not None and generated.request.frame.on_white
