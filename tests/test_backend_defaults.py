"""``backend: default`` moves every shipped workflow with one variable; plugins that cannot load
or that predate ``control`` are handled; the Control a backend gets does what it says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from genhook.backends.base import (
    BackendRegistry,
    Control,
    GenerationRequest,
    GenerationResult,
    Progress,
    UnavailableBackend,
    call_generate,
)
from genhook.backends.defaults import BackendDefaults
from genhook.config import ConfigError, Settings
from genhook.errors import ErrorCode, GenhookError, TemplateError
from genhook.runtime import load_catalog

SHIPPED = ("product-image", "article-header", "user-hero", "onboarding-kit")
TRIGGER = {
    "product_id": "SKU-1",
    "product_name": "linen shirt",
    "target_style": "studio_white",
    "target_platform": "instagram_feed",
}


def _generate_nodes(catalog: object, workflow_id: str) -> list[dict[str, object]]:
    wf = catalog.workflow(workflow_id)  # type: ignore[attr-defined]
    return [s.params for s in wf.nodes.values() if s.kind == "generate"]


def test_shipped_workflows_follow_the_image_backend_variable(tmp_path: Path) -> None:
    """Every shipped workflow runs on GENHOOK_IMAGE_BACKEND with its default model, and the
    API's plan (no backend built) prices it by that backend."""
    procedural = load_catalog(Settings.from_env({"GENHOOK_DATA_DIR": str(tmp_path)}))
    openai = load_catalog(
        Settings.from_env(
            {
                "GENHOOK_DATA_DIR": str(tmp_path),
                "GENHOOK_IMAGE_BACKEND": "openai",
                "GENHOOK_OPENAI_MODEL": "gpt-image-1",
            }
        )
    )
    for workflow_id in SHIPPED:
        for params in _generate_nodes(procedural, workflow_id):
            assert (params["backend"], params["model"]) == ("procedural", "procedural-v1")
        for params in _generate_nodes(openai, workflow_id):
            assert (params["backend"], params["model"]) == ("openai", "gpt-image-1")
        assert openai.workflow(workflow_id).backend == "openai"
    wf = openai.workflow("product-image")
    plan = openai.plan(wf, openai.validate(wf, TRIGGER).input)
    generate = next(step for step in plan["steps"] if step["kind"] == "generate")
    assert generate["backend"] == "openai" and generate["model"] == "gpt-image-1"
    assert plan["credit_estimate"]["expected"] > 0  # openai is priced; procedural is free
    free = procedural.workflow("product-image")
    plan = procedural.plan(free, procedural.validate(free, TRIGGER).input)
    assert plan["credit_estimate"]["expected"] == 0


def test_a_named_backend_is_left_alone() -> None:
    """Only ``default`` (or nothing) is resolved; a named backend or model stays as written."""
    defaults = BackendDefaults.from_settings(Settings(image_backend="fal"))
    assert defaults.params({"backend": "openai", "model": "dall-e-3"}) == {
        "backend": "openai",
        "model": "dall-e-3",
    }
    assert defaults.params({"backend": "replicate"})["model"] == "black-forest-labs/flux-schnell"
    assert defaults.params({})["backend"] == "fal"
    assert defaults.params({"backend": "default", "kind": "video"})["backend"] == "procedural"
    wired = {"backend": "${input.engine}", "model": "default"}
    assert defaults.params(wired) == wired  # resolved when the run knows the value


def test_video_kind_follows_the_video_backend_variable() -> None:
    """``kind: video`` takes GENHOOK_VIDEO_BACKEND and that backend's video model."""
    settings = Settings.from_env(
        {
            "GENHOOK_VIDEO_BACKEND": "replicate",
            "GENHOOK_REPLICATE_VIDEO_MODEL": "owner/clip-model",
        }
    )
    defaults = BackendDefaults.from_settings(settings)
    assert defaults.resolve("default", "default", "video") == ("replicate", "owner/clip-model")
    assert defaults.resolve("default", None, "image") == ("procedural", "procedural-v1")


def test_an_unpriced_default_is_refused_at_load(tmp_path: Path) -> None:
    """A default backend with no known default model names the problem at load."""
    settings = Settings.from_env(
        {"GENHOOK_DATA_DIR": str(tmp_path), "GENHOOK_IMAGE_BACKEND": "nowhere"}
    )
    with pytest.raises(TemplateError) as caught:
        load_catalog(settings)
    assert "nowhere" in str(caught.value)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GENHOOK_IMAGE_BACKEND": "not a name"}, "GENHOOK_IMAGE_BACKEND"),
        ({"GENHOOK_VIDEO_BACKEND": "default"}, "GENHOOK_VIDEO_BACKEND"),
        ({"GENHOOK_COMFYUI_URL": "ftp://x"}, "GENHOOK_COMFYUI_URL"),
        ({"GENHOOK_REPLICATE_BASE_URL": "nope"}, "GENHOOK_REPLICATE_BASE_URL"),
        ({"GENHOOK_FAL_KEY": "k\u00e9y"}, "GENHOOK_FAL_KEY"),
        ({"GENHOOK_COMFYUI_WORKFLOW": "/no/such/graph.json"}, "GENHOOK_COMFYUI_WORKFLOW"),
        ({"GENHOOK_DIFFUSERS_MODEL_DIR": "/no/such/dir"}, "GENHOOK_DIFFUSERS_MODEL_DIR"),
        ({"GENHOOK_DIFFUSERS_DEVICE": "tpu"}, "GENHOOK_DIFFUSERS_DEVICE"),
        ({"GENHOOK_INPUT_MAX_BYTES": "-3"}, "GENHOOK_INPUT_MAX_BYTES"),
    ],
)
def test_engine_settings_are_checked(env: dict[str, str], variable: str) -> None:
    """A bad engine setting is one line naming its variable (the CLI exits 2 with it)."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(variable)
    assert "\n" not in str(caught.value)


def test_conventional_key_variables() -> None:
    """The engines' own conventional variables work too; genhook's win where both are set."""
    settings = Settings.from_env({"REPLICATE_API_TOKEN": "r8_a", "FAL_KEY": "fal_b"})
    assert (settings.replicate.key, settings.fal.key) == ("r8_a", "fal_b")
    both = Settings.from_env({"REPLICATE_API_TOKEN": "r8_a", "GENHOOK_REPLICATE_API_TOKEN": "g"})
    assert both.replicate.key == "g"


class _Legacy:
    """A plugin written before ``control``: ``generate(request)`` only."""

    name = "legacy"
    kinds = frozenset({"image"})

    def generate(self, request: GenerationRequest) -> GenerationResult:
        pixels = np.zeros((request.height, request.width, 3), dtype=np.uint8)
        return GenerationResult(pixels, request, "legacy/m", 0.0)


class _Modern(_Legacy):
    def generate(  # type: ignore[override]
        self, request: GenerationRequest, control: Control
    ) -> GenerationResult:
        control.progress(1, 2)
        control.progress(2, 2)
        return super().generate(request)


def _request() -> GenerationRequest:
    return GenerationRequest("p", "", 16, 16, 1, "m", backend="legacy")


def test_call_generate_serves_old_and_new_plugins() -> None:
    """Both signatures are called right; progress reaches the listener; a cancelled or
    timed-out job does not start its generation."""
    seen: list[Progress] = []
    result = call_generate(_Legacy(), _request())  # type: ignore[arg-type]
    assert result.pixels.shape == (16, 16, 3)
    call_generate(_Modern(), _request(), Control(on_progress=seen.append))  # type: ignore[arg-type]
    assert [(p.step, p.total) for p in seen] == [(1, 2), (2, 2)]
    with pytest.raises(GenhookError) as cancelled:
        call_generate(_Modern(), _request(), Control(is_cancelled=lambda: True))  # type: ignore[arg-type]
    assert cancelled.value.code is ErrorCode.CANCELLED
    with pytest.raises(GenhookError) as late:
        call_generate(_Modern(), _request(), Control(deadline=time.monotonic() - 1))  # type: ignore[arg-type]
    assert late.value.code is ErrorCode.BACKEND_TIMEOUT and late.value.retryable


def test_control_helpers(tmp_path: Path) -> None:
    """remaining() is bounded by the deadline and the cap; a failing progress listener is
    ignored; scratch() gives the attempt's folder, or a temporary one."""

    def broken(progress: Progress) -> None:
        raise RuntimeError("listener down")

    control = Control(on_progress=broken, deadline=time.monotonic() + 100)
    control.progress(1, 1)  # does not raise
    left = control.remaining(5.0)
    assert left is not None and 0 < left <= 5.0
    assert Control().remaining() is None and Control().remaining(3.0) == 3.0
    assert Control(workdir=tmp_path / "w").scratch() == tmp_path / "w"
    assert Control().scratch().is_dir()


def test_unavailable_backend_says_why() -> None:
    """A backend that cannot be loaded is listed, never ready, and refuses with the reason."""
    stand_in = UnavailableBackend("ghost", "cannot be loaded: No module named 'torch'")
    assert not stand_in.status().ready and "torch" in stand_in.probe(1.0).detail
    with pytest.raises(GenhookError) as caught:
        stand_in.generate(_request(), Control())
    assert caught.value.code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert "torch" in caught.value.description


def test_a_broken_plugin_does_not_take_the_registry_down(tmp_path: Path) -> None:
    """An installed backend whose module fails to import is listed as not ready with the
    import error; every other backend still loads (a real distribution on the path)."""
    site = tmp_path / "site"
    (site / "broken_engine").mkdir(parents=True)
    (site / "broken_engine" / "__init__.py").write_text("import no_such_sdk\n", encoding="utf-8")
    dist = site / "broken_engine-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-engine\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[genhook.backends]\nbroken = broken_engine:Engine\n")
    env = {**os.environ, "PYTHONPATH": str(site), "GENHOOK_DATA_DIR": str(tmp_path / "var")}
    exe = str(Path(sys.executable).with_name("genhook"))
    proc = subprocess.run(
        [exe, "backends", "list", "--offline"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {row["backend"]: row for row in json.loads(proc.stdout)}
    assert rows["procedural"]["ready"] is True
    assert rows["broken"]["ready"] is False
    assert "no_such_sdk" in rows["broken"]["detail"]
    assert "broken" not in BackendRegistry.from_entry_points().names()  # not on this path


def test_shipped_workflows_say_default() -> None:
    """Every shipped workflow's generate nodes name ``backend: default`` (the contract)."""
    root = Path(__file__).parent.parent / "workflows"
    for path in sorted(root.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        generates = text.count("kind: generate")
        assert text.count("backend: default") == generates, textwrap.shorten(path.name, 40)


def test_an_image_smaller_than_asked_is_enlarged_to_cover_it() -> None:
    """An engine with fixed sizes (1536x1024 for a 1920x1080 frame) gets its image enlarged
    to cover the frame, up to 3x; an image far too small, or big enough, is left as made."""
    from genhook.nodes.generate import fit_up

    def made(width: int, height: int, asked: tuple[int, int]) -> GenerationResult:
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        pixels[:, : width // 2] = 200  # a left half to find again
        request = GenerationRequest("p", "", asked[0], asked[1], 1, "m", backend="openai")
        return GenerationResult(pixels, request, "openai/m", 0.0)

    grown = fit_up(made(1536, 1024, (1920, 1080))).pixels
    assert grown.shape == (1280, 1920, 3) and grown.dtype == np.uint8
    assert grown[:, :900].mean() > 190 and grown[:, 1020:].mean() < 10
    tiny = made(256, 256, (1920, 1080))
    assert fit_up(tiny) is tiny  # 7.5x: the quality check's size limits decide
    big = made(2048, 2048, (1024, 1024))
    assert fit_up(big) is big
