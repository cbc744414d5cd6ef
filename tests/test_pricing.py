"""The pricing file: parsed and checked, exact models over "*", unpriced engines refused, and the
dry run's estimate equal to what a real run is charged for what it made."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from genhook.backends.base import AssetKind, BackendRegistry, GenerationRequest
from genhook.backends.procedural import ProceduralBackend
from genhook.catalog import Catalog
from genhook.config import ConfigError, Settings
from genhook.engine import Engine
from genhook.errors import ErrorCode, GenhookError, TemplateError
from genhook.paths import shipped_dir
from genhook.presets import Presets
from genhook.pricing import Pricing, load_pricing, shipped_pricing
from genhook.sinks import DirectorySink
from tests.conftest import SAMPLES, CliResult
from tests.fakes import ScriptedBackend

SHIPPED_BACKENDS = ("procedural", "openai", "comfyui", "diffusers", "replicate", "fal")
PRICED_PROCEDURAL = 'procedural:\n  "*": {per_image: 1.5, per_video_second: 0.5}\n'


def write(tmp_path: Path, text: str, name: str = "pricing.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def request(
    backend: str, model: str, kind: AssetKind = "image", duration_seconds: float = 0.0
) -> GenerationRequest:
    return GenerationRequest(
        "p", "", 64, 64, 1, model, backend=backend, kind=kind, duration_seconds=duration_seconds
    )


# -- the file: parsed and checked ------------------------------------------------------------


BAD_FILES = [
    ('openai:\n  "*": {per_imag: 4}\n', 2, "openai.*.per_imag", "unknown price key"),
    ('openai:\n  "*": {per_image: -1}\n', 2, "openai.*.per_image", "not a number of credits"),
    ('openai:\n  "*": {per_image: .inf}\n', 2, "openai.*.per_image", "finite"),
    ('openai:\n  "*": {per_image: .nan}\n', 2, "openai.*.per_image", "finite"),
    ('openai:\n  "*": {per_image: "4"}\n', 2, "openai.*.per_image", "not a number"),
    ('openai:\n  "*": {per_image: true}\n', 2, "openai.*.per_image", "not a number"),
    ("openai:\n  gpt-image-1: 4.0\n", 2, "openai.gpt-image-1", "maps per_image"),
    ("openai:\n  gpt-image-1: {}\n", 2, "openai.gpt-image-1", "maps per_image"),
    ("openai: 4.0\n", 1, "openai", "maps model names"),
    (
        'fal:\n  "*": {per_image: 1}\nopenai:\n  "*": {per_image: 1}\n  "*": {per_image: 2}\n',
        5,
        "openai.*",
        "duplicate key",
    ),
    ("- openai\n", 1, "(file)", "not a mapping of backends"),
    ("openai:\n  *: {per_image: 1}\n", None, "", "not YAML"),
]


@pytest.mark.parametrize(("text", "line", "key", "message"), BAD_FILES)
def test_a_bad_pricing_file_is_one_line_naming_the_variable_line_and_key(
    tmp_path: Path, text: str, line: int | None, key: str, message: str
) -> None:
    """Unknown keys, negative, non-finite or non-numeric prices, wrong shapes and duplicates are
    refused with one line: GENHOOK_PRICING_FILE, FILE:LINE, the key at fault, what is wrong."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_pricing(path)
    said = str(caught.value)
    assert "\n" not in said
    assert said.startswith("GENHOOK_PRICING_FILE: ")
    assert message in said
    if line is not None:
        assert f"{path}:{line}: {key}: " in said
    else:
        assert str(path) in said


def test_a_missing_pricing_file_is_refused_by_the_settings(tmp_path: Path) -> None:
    """GENHOOK_PRICING_FILE naming no file stops the settings being read; a good one is kept."""
    env = {"GENHOOK_DATA_DIR": str(tmp_path / "var")}
    with pytest.raises(ConfigError, match=r"GENHOOK_PRICING_FILE: .* is not a file"):
        Settings.from_env({**env, "GENHOOK_PRICING_FILE": str(tmp_path / "none.yaml")})
    good = write(tmp_path, PRICED_PROCEDURAL, "good.yaml")
    assert Settings.from_env({**env, "GENHOOK_PRICING_FILE": str(good)}).pricing_file == good


def test_the_pricing_is_frozen(tmp_path: Path) -> None:
    """A loaded pricing cannot be changed in place: not its table, not a backend's models."""
    pricing = load_pricing(write(tmp_path, PRICED_PROCEDURAL))
    with pytest.raises(FrozenInstanceError):
        pricing.source = "elsewhere"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pricing.table["openai"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        pricing.table["procedural"]["*"] = None  # type: ignore[index]


# -- looking prices up -----------------------------------------------------------------------


def test_an_exact_model_beats_the_wildcard_price_by_price(tmp_path: Path) -> None:
    """A model's own entry wins over "*" for each price it names; the others come from "*"."""
    pricing = load_pricing(
        write(
            tmp_path,
            """\
            replicate:
              "*": {per_image: 1.0, per_video_second: 10.0}
              flux-pro: {per_image: 5.5}
              free-model: {per_image: 0}
            """,
        )
    )
    assert pricing.price("replicate", "flux-pro", "image", 2) == 11.0
    assert pricing.price("replicate", "flux-pro", "video_seconds", 1.5) == 15.0
    assert pricing.price("replicate", "free-model", "image", 3) == 0.0
    assert pricing.price("replicate", "anything-else", "image", 3) == 3.0
    assert pricing.estimate_cost(request("replicate", "flux-pro")) == 5.5
    video = request("replicate", "any", kind="video", duration_seconds=4)
    assert pricing.estimate_cost(video) == 40.0


def test_an_unpriced_backend_or_output_is_refused_and_procedural_is_free(tmp_path: Path) -> None:
    """No price for a backend, a model or an output: backend_not_configured (never 0). Only the
    procedural renderer costs 0 where the file does not name it."""
    pricing = load_pricing(write(tmp_path, "openai:\n  gpt-image-1: {per_image: 4.0}\n"))
    for backend, model, output in [
        ("replicate", "any", "image"),
        ("openai", "dall-e-3", "image"),
        ("openai", "gpt-image-1", "video_seconds"),
    ]:
        assert pricing.unit_price(backend, model, output) is None  # type: ignore[arg-type]
        with pytest.raises(GenhookError) as caught:
            pricing.price(backend, model, output, 1)  # type: ignore[arg-type]
        assert caught.value.code is ErrorCode.BACKEND_NOT_CONFIGURED
        assert not caught.value.retryable
        assert f"{backend!r} model {model!r}" in caught.value.description
        assert "GENHOOK_PRICING_FILE" in caught.value.description
    assert pricing.price("procedural", "procedural-v1", "image", 6) == 0.0


def test_the_shipped_file_prices_every_shipped_backend_and_procedural_at_0() -> None:
    """As shipped: procedural is 0 for any model (what sandbox services run), and every named
    backend has an image price, so no shipped engine runs unpriced."""
    pricing = shipped_pricing()
    assert pricing.source == str(shipped_dir("presets") / "pricing.yaml")
    assert Settings().resolved().pricing_file == shipped_dir("presets") / "pricing.yaml"
    assert pricing.price("procedural", "procedural-v1", "image", 10) == 0.0
    assert pricing.price("procedural", "any", "video_seconds", 30) == 0.0
    for backend in SHIPPED_BACKENDS:
        assert pricing.unit_price(backend, "some-model", "image") is not None, backend
    assert pricing.price("openai", "gpt-image-1", "image", 1) == 4.0
    assert ProceduralBackend().estimate_cost(request("procedural", "procedural-v1")) == 0.0


# -- workflows: refused at load, or before generating ----------------------------------------

FLOW = """\
id: paid
input:
  required: [name]
  properties:
    name: {type: string}
    engine: {type: string, default: scripted}
nodes:
  image:
    kind: generate
    with:
      prompt: "photo of ${input.name}"
      backend: BACKEND
      model: MODEL
      platforms: PLATFORMS
  export:
    kind: export
    with:
      image: ${image.renders}
      platforms: PLATFORMS
outputs:
  assets:
    - ${export.assets}
"""


def flow(
    tmp_path: Path,
    backend: str = "scripted",
    model: str = "m1",
    platforms: str = "[instagram_feed, instagram_story]",
) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir(exist_ok=True)
    text = FLOW.replace("BACKEND", backend).replace("MODEL", model)
    (folder / "paid.yaml").write_text(text.replace("PLATFORMS", platforms), encoding="utf-8")
    return folder


def test_a_workflow_naming_an_unpriced_engine_is_refused_at_load(
    tmp_path: Path, presets: Presets
) -> None:
    """A paid engine the pricing file does not price never loads: the template error names the
    file, the line of the node's model, the backend and model."""
    pricing = Pricing.from_mapping({"scripted": {"m1": {"per_image": 1.5}}})
    assert Catalog.load(flow(tmp_path), presets, pricing).workflow("paid")
    with pytest.raises(TemplateError) as caught:
        Catalog.load(flow(tmp_path, model="m2"), presets, pricing)
    (problem,) = caught.value.problems
    assert problem.where == "nodes.image.with.model"
    assert problem.line == 13
    assert "'scripted' model 'm2' has no per_image price" in problem.message
    with pytest.raises(TemplateError, match="'openai' model 'm1'"):
        Catalog.load(flow(tmp_path, backend="openai"), presets, Pricing.from_mapping({}))
    # procedural needs no entry: it is free
    assert Catalog.load(
        flow(tmp_path, backend="procedural", model="procedural-v1"), presets, Pricing()
    )


def test_an_engine_wired_from_the_trigger_is_priced_before_it_is_called(
    tmp_path: Path, presets: Presets
) -> None:
    """A backend named by the trigger loads, but an unpriced one fails the job with
    backend_not_configured before the engine is asked for anything."""
    backend = ScriptedBackend([np.full((64, 64, 3), 128, np.uint8)])
    backends = BackendRegistry()
    backends.register(backend)
    engine = Engine.load(
        flow(tmp_path, backend="${input.engine}"), presets, backends, Pricing.from_mapping({})
    )
    trigger = {"name": "x", "engine": "scripted"}
    outcome = engine.execute(engine.workflow("paid"), trigger, DirectorySink(tmp_path))
    assert outcome.error is not None
    assert outcome.error.code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert "'scripted' model 'm1' has no per_image price" in outcome.error.description
    assert backend.requests == []
    assert outcome.credit_cost == 0.0 and outcome.made == {"image": 0, "video_seconds": 0.0}


# -- what an attempt made and cost -----------------------------------------------------------


def flat() -> np.ndarray:
    return np.full((512, 512, 3), 128, np.uint8)  # flat: fails the contrast check


def sharp() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)


QC_FLOW = """\
id: checked
input:
  required: [name]
  properties:
    name: {type: string}
nodes:
  image:
    kind: generate
    with:
      prompt: "photo of ${input.name}"
      backend: scripted
      model: m1
      width: 512
      height: 512
  qc:
    kind: quality_check
    with:
      result: ${image.result}
      max_retries: 2
  export:
    kind: export
    with:
      image: ${qc.image}
      platforms: avatar
outputs:
  assets:
    - ${export.assets}
"""


def test_a_run_is_charged_for_what_it_made_qc_regenerations_included(
    tmp_path: Path, presets: Presets
) -> None:
    """The pricing file, not the engine's own figure, prices each generation: a QC retry is a
    second image, charged; the estimate said 1.5 expected and 4.5 at most. A failure after one
    image is charged that image."""
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "checked.yaml").write_text(QC_FLOW, encoding="utf-8")
    backend = ScriptedBackend([flat(), sharp()], cost=99.0)  # its own figure is ignored
    backends = BackendRegistry()
    backends.register(backend)
    pricing = Pricing.from_mapping({"scripted": {"m1": {"per_image": 1.5}}})
    engine = Engine.load(folder, presets, backends, pricing)
    wf = engine.workflow("checked")
    assert engine.catalog.plan(wf, {"name": "x"})["credit_estimate"] == {
        "expected": 1.5,
        "max": 4.5,
    }
    assert engine.catalog.estimate(wf, {"name": "x"}) == 4.5
    assert engine.catalog.estimate(wf, {"name": "x"}, worst=False) == 1.5
    outcome = engine.execute(wf, {"name": "x"}, DirectorySink(tmp_path / "out"))
    assert outcome.error is None, outcome.error
    assert len(backend.requests) == 2
    assert outcome.made == {"image": 2, "video_seconds": 0.0}
    assert outcome.credit_cost == 3.0
    assert outcome.payload.to_json()["metadata"]["credit_cost"] == 3.0
    # one image made, then the engine fails: that image is charged, and reported made
    failing = ScriptedBackend([flat(), GenhookError(ErrorCode.BACKEND_ERROR, "down")])
    backends = BackendRegistry()
    backends.register(failing)
    engine = Engine.load(folder, presets, backends, pricing)
    failed = engine.execute(engine.workflow("checked"), {"name": "x"}, DirectorySink(tmp_path))
    assert failed.error is not None and failed.error.code is ErrorCode.BACKEND_ERROR
    assert failed.made == {"image": 1, "video_seconds": 0.0}
    assert failed.credit_cost == 1.5
    assert failed.payload.to_json()["metadata"]["credit_cost"] == 1.5


TRIGGERS = [
    ("product-image", {**json.loads((SAMPLES / "product-image" / "linen-shirt.json").read_text())}),
    (
        "product-image",
        {
            "product_id": "SKU-9",
            "product_name": "Linen Shirt",
            "target_style": "minimal",
            "target_platform": "social_pack",
        },
    ),
    ("onboarding-kit", json.loads((SAMPLES / "onboarding-kit" / "northwind.json").read_text())),
]


def test_the_fast_estimate_equals_the_dry_run_for_every_shipped_sample(tmp_path: Path) -> None:
    """``Catalog.estimate`` (no rendering) says what the dry run's plan says, worst and expected,
    for every shipped workflow on its samples and on every platform selection."""
    catalog = Catalog.load(pricing=load_pricing(write(tmp_path, PRICED_PROCEDURAL)))
    checked = 0
    for sample in sorted(SAMPLES.glob("*/*.json")):
        wf = catalog.workflow(sample.parent.name)
        body = json.loads(sample.read_text(encoding="utf-8"))
        platforms = wf.input_schema["properties"].get("target_platform", {}).get("enum", [None])
        for platform in platforms:
            trigger = catalog.validate(
                wf, body if platform is None else {**body, "target_platform": platform}
            ).input
            credits = catalog.plan(wf, trigger)["credit_estimate"]
            assert catalog.estimate(wf, trigger) == credits["max"], (sample, platform)
            assert catalog.estimate(wf, trigger, worst=False) == credits["expected"]
            assert credits["expected"] > 0
            checked += 1
    assert checked > 20


def path_of(url: str) -> Path:
    parts = urlsplit(url)
    assert parts.scheme == "file"
    return Path(unquote(parts.path))


@pytest.mark.parametrize(("workflow_id", "trigger"), TRIGGERS, ids=["sample", "social", "kit"])
def test_the_dry_run_estimate_is_what_genhook_run_charges(
    tmp_path: Path, genhook: Callable[..., CliResult], workflow_id: str, trigger: dict[str, Any]
) -> None:
    """With procedural priced at 1.5 an image: `genhook run` is charged exactly the dry run's
    expected estimate, 1.5 per image it generated (one per aspect class its outputs were cut
    from, read back from the decoded files); the worst case is never below it."""
    prices = write(tmp_path, PRICED_PROCEDURAL)
    catalog = Catalog.load(pricing=load_pricing(prices))
    wf = catalog.workflow(workflow_id)
    checked = catalog.validate(wf, trigger).input
    plan = catalog.plan(wf, checked)
    out = tmp_path / "out"
    env = {"GENHOOK_PRICING_FILE": str(prices)}
    result = genhook("run", workflow_id, "--input", json.dumps(trigger), "--out", str(out), env=env)
    assert result.code == 0, result.stderr
    payload = result.json
    assert payload["quality_warning"] is None  # every output passed QC the first time
    sources = {o["platform_code"]: o["source"] for o in plan["outputs"]}
    classes = set()
    for output in payload["outputs"]:
        with Image.open(path_of(output["asset_url"])) as image:
            assert image.size == (output["width"], output["height"])
        classes.add(sources[output["platform_code"]])
    made = payload["metadata"]["generations"]
    # one image per aspect class the decoded outputs were cut from (no class shared by nodes)
    assert made == len(classes) >= 1
    assert made == sum(s["generations"] for s in plan["steps"] if s["kind"] == "generate")
    assert payload["metadata"]["credit_cost"] == pytest.approx(1.5 * made)
    assert payload["metadata"]["credit_cost"] == plan["credit_estimate"]["expected"]
    assert catalog.estimate(wf, checked, worst=False) == payload["metadata"]["credit_cost"]
    assert catalog.estimate(wf, checked) >= payload["metadata"]["credit_cost"]


def test_a_bad_pricing_file_makes_genhook_run_exit_2_with_one_line(
    tmp_path: Path, genhook: Callable[..., CliResult]
) -> None:
    """GENHOOK_PRICING_FILE pointing to a bad file: exit 2, one stderr line naming the variable,
    the line and the key; nothing generated, no traceback."""
    bad = write(tmp_path, 'procedural:\n  "*": {per_image: 0}\nopenai:\n  "*": {per_img: 4}\n')
    out = tmp_path / "out"
    trigger = (SAMPLES / "product-image" / "linen-shirt.json").read_text()
    env = {"GENHOOK_PRICING_FILE": str(bad)}
    result = genhook("run", "product-image", "--input", trigger, "--out", str(out), env=env)
    assert result.code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "GENHOOK_PRICING_FILE" in line and f"{bad}:4: openai.*.per_img" in line
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists()
