"""The ``diffusers`` backend on a tiny random pipeline, loaded from a folder as a user's model is.

The pipeline (tests/tiny_pipeline.py) is built once per test process with random weights and
``save_pretrained()``-ed into a folder; the backend loads it from there with
``local_files_only=True``, on the CPU here (nothing is downloaded: HF_HUB_OFFLINE is set).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from genhook.backends.base import (
    BackendRegistry,
    Control,
    GenerationRequest,
    Progress,
    call_generate,
)
from genhook.config import DiffusersSettings, Settings
from genhook.errors import ErrorCode, GenhookError
from tests.conftest import ROOT, SAMPLES
from tests.tiny_pipeline import build

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline's folder (model_index.json at its top)."""
    return build(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> Iterator[object]:
    """One backend for the module: the pipeline loads once, as in a worker process."""
    import torch

    from genhook.backends.diffusers_local import DiffusersBackend

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model gains nothing from more; shared cores lose a lot
    yield DiffusersBackend(DiffusersSettings(model_dir=model_dir, device="cpu"))
    torch.set_num_threads(threads)


def request(**changes: object) -> GenerationRequest:
    base: dict[str, object] = {
        "prompt": "product photograph of a ceramic mug",
        "negative_prompt": "blurry",
        "width": 64,
        "height": 48,
        "seed": 7,
        "model": "local",
        "backend": "diffusers",
        "options": {"steps": 3},
    }
    base.update(changes)
    return GenerationRequest(**base)  # type: ignore[arg-type]


def generate(backend: object, req: GenerationRequest, control: Control | None = None) -> object:
    return call_generate(backend, req, control)  # type: ignore[arg-type]


def test_image_at_the_asked_size(backend: object) -> None:
    """A multiple of the pipeline's 16 px comes back as is; any other size is generated at the
    nearest multiple and resized back; uint8 RGB, not flat."""
    for width, height in ((64, 48), (70, 41)):
        result = generate(backend, request(width=width, height=height))
        pixels = result.pixels  # type: ignore[attr-defined]
        assert pixels.shape == (height, width, 3) and pixels.dtype == np.uint8
        assert pixels.std() > 1.0
        assert result.model_id == "diffusers/tiny-sd"  # type: ignore[attr-defined]
        assert result.credit_cost == 0.0  # type: ignore[attr-defined]


def test_same_seed_same_image_other_seed_other_image(backend: object) -> None:
    a = generate(backend, request(seed=11)).pixels  # type: ignore[attr-defined]
    b = generate(backend, request(seed=11)).pixels  # type: ignore[attr-defined]
    c = generate(backend, request(seed=12)).pixels  # type: ignore[attr-defined]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_negative_prompt_reaches_the_pipeline(backend: object) -> None:
    """Same seed, another negative prompt: another image (classifier-free guidance uses it)."""
    a = generate(backend, request(negative_prompt="")).pixels  # type: ignore[attr-defined]
    b = generate(backend, request(negative_prompt="dark, noisy")).pixels  # type: ignore[attr-defined]
    assert not np.array_equal(a, b)


def test_progress_once_per_step(backend: object) -> None:
    seen: list[Progress] = []
    generate(backend, request(options={"steps": 5}), Control(on_progress=seen.append))
    steps = [(p.step, p.total) for p in seen if not p.message]  # not the load's message
    assert steps == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_cancel_mid_run_stops_before_the_end(backend: object) -> None:
    seen: list[Progress] = []
    control = Control(on_progress=seen.append, is_cancelled=lambda: any(p.step >= 2 for p in seen))
    with pytest.raises(GenhookError) as caught:
        generate(backend, request(options={"steps": 8}), control)
    assert caught.value.code is ErrorCode.CANCELLED
    assert max(p.step for p in seen) == 2


def test_past_the_deadline_is_backend_timeout(backend: object) -> None:
    control = Control()

    def expire(progress: Progress) -> None:
        if progress.step == 1 and not progress.message:
            control.deadline = 0.0  # long past, on the monotonic clock

    control.on_progress = expire
    with pytest.raises(GenhookError) as caught:
        generate(backend, request(options={"steps": 6}), control)
    assert caught.value.code is ErrorCode.BACKEND_TIMEOUT
    assert caught.value.retryable


@pytest.mark.parametrize("steps", [0, -1, 1000, "many", 2.5, True])
def test_bad_steps_are_rejected(backend: object, steps: object) -> None:
    with pytest.raises(GenhookError) as caught:
        generate(backend, request(options={"steps": steps}))
    assert caught.value.code is ErrorCode.BACKEND_REJECTED
    assert "options.steps" in caught.value.description


def test_only_the_local_model(backend: object) -> None:
    generate(backend, request(model="tiny-sd", options={"steps": 1}))  # the folder's own name
    with pytest.raises(GenhookError) as caught:
        generate(backend, request(model="sdxl"))
    assert caught.value.code is ErrorCode.BACKEND_REJECTED and "'sdxl'" in caught.value.description


def test_status_and_probe(backend: object) -> None:
    status = backend.status()  # type: ignore[attr-defined]
    assert status.ready and "tiny-sd (StableDiffusionPipeline)" in status.detail
    probe = backend.probe(3.0)  # type: ignore[attr-defined]
    assert probe.ready and "the CPU, float32" in probe.detail


def test_a_fresh_backend_probes_without_loading(model_dir: Path) -> None:
    from genhook.backends.diffusers_local import DiffusersBackend

    fresh = DiffusersBackend(DiffusersSettings(model_dir=model_dir))  # device auto: the CPU here
    probe = fresh.probe(3.0)
    assert probe.ready and "not loaded yet" in probe.detail and fresh._pipe is None


def test_from_the_registry(model_dir: Path) -> None:
    """The entry point builds it from the settings (GENHOOK_DIFFUSERS_MODEL_DIR)."""
    settings = Settings(diffusers=DiffusersSettings(model_dir=model_dir))
    registry = BackendRegistry.from_entry_points(settings)
    backend = registry.get("diffusers")
    assert type(backend).__name__ == "DiffusersBackend"
    assert backend.status().ready


def not_configured(backend: object, req: GenerationRequest | None = None) -> str:
    with pytest.raises(GenhookError) as caught:
        generate(backend, req or request())
    assert caught.value.code is ErrorCode.BACKEND_NOT_CONFIGURED
    assert not caught.value.retryable
    return caught.value.description


def test_unset_or_bad_model_dir_refused(tmp_path: Path) -> None:
    from genhook.backends.diffusers_local import DiffusersBackend

    unset = DiffusersBackend(DiffusersSettings())
    assert not unset.status().ready
    assert "GENHOOK_DIFFUSERS_MODEL_DIR is not set" in not_configured(unset)
    empty = DiffusersBackend(DiffusersSettings(model_dir=tmp_path))
    assert "no model_index.json" in empty.status().detail
    assert not empty.probe(3.0).ready
    assert "no model_index.json" in not_configured(empty)
    (tmp_path / "model_index.json").write_text("{not json", encoding="utf-8")
    assert "not readable JSON" in not_configured(empty)


def test_incomplete_model_dir_refused_naming_the_problem(model_dir: Path, tmp_path: Path) -> None:
    """A component's folder missing: not ready, naming it; its weights missing: refused at
    load, naming the folder and what the loader missed."""
    from genhook.backends.diffusers_local import DiffusersBackend

    broken = tmp_path / "broken-sd"
    shutil.copytree(model_dir, broken)
    shutil.rmtree(broken / "unet")
    backend = DiffusersBackend(DiffusersSettings(model_dir=broken, device="cpu"))
    assert not backend.status().ready
    assert "names components with no folder: unet" in not_configured(backend)
    (broken / "unet").mkdir()
    shutil.copy(model_dir / "unet" / "config.json", broken / "unet")
    assert backend.status().ready  # status reads no weights
    detail = not_configured(backend)
    assert "cannot load the pipeline in broken-sd" in detail
    assert "diffusion_pytorch_model" in detail


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "mps"])
def test_a_missing_device_is_not_ready(model_dir: Path, device: str) -> None:
    """Named devices this CPU-only torch does not have: not ready, saying so; never generated
    on another device instead."""
    import torch

    from genhook.backends.diffusers_local import DiffusersBackend

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    backend = DiffusersBackend(DiffusersSettings(model_dir=model_dir, device=device))
    probe = backend.probe(3.0)
    assert not probe.ready and "GENHOOK_DIFFUSERS_DEVICE" in probe.detail
    assert device in not_configured(backend)


def test_without_the_packages_not_ready(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An install without the extra: listed, not ready, with the pip command."""
    from genhook.backends.diffusers_local import DiffusersBackend

    monkeypatch.setitem(sys.modules, "diffusers", None)  # what find_spec sees when absent
    backend = DiffusersBackend(DiffusersSettings(model_dir=model_dir))
    status = backend.status()
    assert not status.ready and "pip install genhook[diffusers]" in status.detail
    assert "pip install genhook[diffusers]" in not_configured(backend)


def test_module_imports_without_torch() -> None:
    """Importing the backend's module imports neither torch nor diffusers."""
    code = (
        "import sys; import genhook.backends.diffusers_local; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_product_image_through_genhook_run(model_dir: Path, tmp_path: Path) -> None:
    """The shipped product-image workflow on GENHOOK_IMAGE_BACKEND=diffusers, through
    ``genhook run``: exit 0, every output decoded at its preset's size. The template is copied
    with one change, so the tiny pipeline runs at its own scale: one small image for every
    preset (``single``, 64x64, 2 steps) instead of one ~2048 px image per aspect class."""
    template = yaml.safe_load((ROOT / "workflows" / "product-image.yaml").read_text("utf-8"))
    image = template["nodes"]["image"]["with"]
    assert image["backend"] == "default" and image["model"] == "default"
    image.update(width=64, height=64, aspect_classes="single", options={"steps": 2})
    template["nodes"]["qc"]["with"].update(min_width=0, min_height=0)
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "product-image.yaml").write_text(yaml.safe_dump(template), encoding="utf-8")
    sample = SAMPLES / "product-image" / "linen-shirt.json"
    env = {
        "GENHOOK_IMAGE_BACKEND": "diffusers",
        "GENHOOK_DIFFUSERS_MODEL_DIR": str(model_dir),
        "GENHOOK_WORKFLOWS_DIR": str(workflows),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # as the fixture above: one thread for the tiny model
    }
    out = tmp_path / "assets"
    exe = Path(sys.executable).with_name("genhook")
    proc = subprocess.run(  # as tests/conftest.py's genhook fixture, with room for torch's start
        [str(exe), "run", "product-image", "--input", str(sample), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **env},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    payload = json.loads(proc.stdout)
    assert payload["status"] == "success"
    assert payload["metadata"]["model_id"] == "diffusers/tiny-sd"
    body = json.loads(sample.read_text(encoding="utf-8"))
    assert payload["external_id"] == body["product_id"]
    assert payload["outputs"]
    for output in payload["outputs"]:
        path = out / output["filename_suggestion"]
        with Image.open(path) as img:
            img.load()
            assert img.size == (output["width"], output["height"])
            assert np.asarray(img.convert("RGB")).std() > 1.0
