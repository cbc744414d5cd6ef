"""The ``diffusers`` backend: a text-to-image pipeline on this machine (GPU, Apple MPS or CPU).

Install it with ``pip install genhook[diffusers]`` (torch, diffusers, transformers, accelerate,
safetensors); without those packages the backend is listed, not ready, and says so. Importing
this module imports none of them: they load at the first generation.

Its settings (``genhook.config.DiffusersSettings``):

- ``GENHOOK_DIFFUSERS_MODEL_DIR``: a diffusers pipeline folder as ``save_pretrained()`` writes
  it (``model_index.json`` at its top, one sub-folder per component), e.g. a snapshot of
  ``stable-diffusion-v1-5`` or ``sdxl-base``. Nothing is ever downloaded
  (``local_files_only=True``): the folder must be complete.
- ``GENHOOK_DIFFUSERS_DEVICE``: ``auto`` (default: CUDA if there is one, in bfloat16 where the
  GPU supports it, else float16; then Apple MPS in float16; else the CPU in float32), ``cpu``,
  ``cuda``, ``cuda:N`` or ``mps``. A device named but absent makes the backend not ready.

The pipeline is loaded once per worker process, at the first generation, under a lock, through
``AutoPipelineForText2Image.from_pretrained`` (``DiffusionPipeline.from_pretrained`` for a
pipeline class the auto mapping does not know). One generation runs at a time on it (a pipeline
and its scheduler are not thread-safe; a worker's other jobs wait, and a cancelled one stops
waiting).

A generation:

- is seeded by a CPU ``torch.Generator`` (the initial noise is drawn on the CPU and moved), so the
  same seed gives the same image on the same device and software;
- runs at the asked size rounded to the pipeline's multiple (:func:`round_size`: 8 x the VAE's
  scale factor, e.g. 64 px for Stable Diffusion) and is resized back to the asked size;
- takes ``options``: ``steps`` (or ``num_inference_steps``, default :data:`DEFAULT_STEPS`) and
  ``guidance_scale``; the negative prompt goes to pipelines that accept one;
- reports progress after each denoising step and, between steps, stops on cancel
  (``cancelled``) or past the run timeout (``backend_timeout``).

Failures: a missing or unreadable model folder, a missing device or missing packages are
``backend_not_configured`` (permanent, naming the problem); running out of GPU memory is
``backend_error`` (transient: retried later, when the GPU may be freer), as is any other failure
of the pipeline; an image with NaNs (float16 overflow) is ``backend_error`` too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genhook.backends.base import (
    AssetKind,
    BackendStatus,
    Control,
    GenerationRequest,
    GenerationResult,
)
from genhook.config import DiffusersSettings
from genhook.errors import ErrorCode, GenhookError
from genhook.media import Pixels
from genhook.pricing import Pricing, load_pricing, shipped_pricing

if TYPE_CHECKING:
    from genhook.config import Settings

INSTALL_HINT = "pip install genhook[diffusers]"
PACKAGES = ("torch", "diffusers", "transformers")
DEFAULT_STEPS = 25
MAX_STEPS = 200
LOCAL_MODEL = "local"
"""The model name of "the pipeline in the folder" (the folder's own name is accepted too)."""
LOCK_POLL = 0.2
"""Seconds between cancel checks while another job holds the pipeline."""
MAX_DETAIL = 300


@dataclass(frozen=True)
class Placement:
    """Where the pipeline runs: the torch device and dtype names, and why."""

    device: str
    dtype: str
    why: str


class DiffusersBackend:
    """Generates images with a local diffusers pipeline, loaded once per process."""

    name = "diffusers"
    kinds: frozenset[AssetKind] = frozenset({"image"})
    cpu_bound = True  # runs in this process (on the CPU, or feeding the GPU)
    max_concurrency = 1  # one pipeline per process, one job on it at a time

    def __init__(
        self, config: DiffusersSettings | None = None, pricing: Pricing | None = None
    ) -> None:
        self.config = config or DiffusersSettings()
        self.pricing = pricing or shipped_pricing()
        self._lock = threading.Lock()
        self._pipe: Any = None
        self._placement: Placement | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DiffusersBackend:
        """The factory the backend registry calls (prices from the pricing file)."""
        path = settings.pricing_file
        return cls(settings.diffusers, load_pricing(path) if path is not None else None)

    # -- the Backend protocol ----------------------------------------------------------------

    def status(self) -> BackendStatus:
        """Ready when the packages are installed and the folder holds a pipeline; imports and
        loads nothing."""
        problem = self._problem()
        if problem:
            return BackendStatus(False, problem)
        folder = self.config.model_dir
        assert folder is not None
        return BackendStatus(True, f"{folder.name} ({_pipeline_class(folder)}), {self._where()}")

    def probe(self, timeout: float) -> BackendStatus:
        """:meth:`status`, plus torch imports and the device is there (the pipeline is not
        loaded)."""
        first = self.status()
        if not first.ready:
            return first
        try:
            placement = self.placement()
        except GenhookError as exc:
            return BackendStatus(False, exc.description)
        loaded = "loaded" if self._pipe is not None else "not loaded yet"
        return BackendStatus(True, f"{first.detail.split(', ')[0]} on {placement.why}, {loaded}")

    def estimate_cost(self, request: GenerationRequest) -> float:
        """The pricing file's credits for one image (0 as shipped)."""
        return self.pricing.price(self.name, request.model, "image", 1)

    def generate(
        self, request: GenerationRequest, control: Control | None = None
    ) -> GenerationResult:
        """One image for ``request`` (see the module's description)."""
        control = control or Control()
        problem = self._problem()
        if problem:
            raise GenhookError(ErrorCode.BACKEND_NOT_CONFIGURED, f"diffusers: {problem}")
        folder = self.config.model_dir
        assert folder is not None
        if request.model not in (LOCAL_MODEL, folder.name):
            raise GenhookError(
                ErrorCode.BACKEND_REJECTED,
                f"diffusers serves one model, {LOCAL_MODEL!r} (the pipeline in "
                f"GENHOOK_DIFFUSERS_MODEL_DIR, {folder.name!r}), not {request.model!r}",
            )
        steps = _steps(request.options)
        started = time.perf_counter()
        self._acquire(control)
        try:
            pipe = self._load(control)
            control.check()
            pixels = self._run(pipe, request, steps, control)
        finally:
            self._lock.release()
        return GenerationResult(
            pixels=pixels,
            request=request,
            model_id=f"diffusers/{folder.name}",
            credit_cost=self.estimate_cost(request),
            seconds=time.perf_counter() - started,
        )

    # -- the pieces --------------------------------------------------------------------------

    def _problem(self) -> str | None:
        """Why this backend cannot serve, from the settings and the file system alone."""
        missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            return f"needs {', '.join(missing)}: {INSTALL_HINT}"
        folder = self.config.model_dir
        if folder is None:
            return "GENHOOK_DIFFUSERS_MODEL_DIR is not set (a diffusers pipeline folder)"
        if not folder.is_dir():
            return f"GENHOOK_DIFFUSERS_MODEL_DIR {folder} is not a directory"
        index = folder / "model_index.json"
        if not index.is_file():
            return (
                f"GENHOOK_DIFFUSERS_MODEL_DIR {folder} has no model_index.json "
                "(not a diffusers pipeline folder: save one with save_pretrained())"
            )
        try:
            components = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return f"{folder.name}/model_index.json is not readable JSON ({exc})"
        if not isinstance(components, dict):
            return f"{folder.name}/model_index.json is not a JSON object"
        absent = [name for name in _components(components) if not (folder / name).is_dir()]
        if absent:
            return f"{folder.name}/model_index.json names components with no folder: " + ", ".join(
                absent
            )
        return None

    def _where(self) -> str:
        device = self.config.device
        return "device auto" if device == "auto" else f"device {device}"

    def placement(self) -> Placement:
        """The device and dtype for the setting (imports torch); ``backend_not_configured``
        when the device named is not there."""
        if self._placement is None:
            self._placement = choose_placement(self.config.device)
        return self._placement

    def _acquire(self, control: Control) -> None:
        """Take the pipeline, checking for cancel and the deadline while another job has it."""
        while not self._lock.acquire(timeout=LOCK_POLL):
            control.check()
        try:
            control.check()
        except BaseException:
            self._lock.release()
            raise

    def _load(self, control: Control) -> Any:
        """The pipeline, loaded on first use (the caller holds the lock)."""
        if self._pipe is not None:
            return self._pipe
        folder = self.config.model_dir
        assert folder is not None
        placement = self.placement()
        control.progress(0, 1, f"loading the pipeline in {folder.name}")
        self._pipe = load_pipeline(folder, placement)
        return self._pipe

    def _run(self, pipe: Any, request: GenerationRequest, steps: int, control: Control) -> Pixels:
        """Denoise and decode; the image at the asked size as RGB uint8."""
        import torch

        multiple = size_multiple(pipe)
        width, height = round_size(request.width, multiple), round_size(request.height, multiple)
        accepts = _call_parameters(pipe)
        kwargs: dict[str, Any] = {
            "prompt": request.prompt,
            "width": width,
            "height": height,
            "num_inference_steps": steps,
            "generator": torch.Generator("cpu").manual_seed(request.seed),
            "output_type": "np",
        }
        negative = request.negative_prompt.strip()
        if negative and "negative_prompt" in accepts:
            kwargs["negative_prompt"] = negative
        guidance = request.options.get("guidance_scale")
        if isinstance(guidance, int | float) and not isinstance(guidance, bool):
            kwargs["guidance_scale"] = float(guidance)
        if "callback_on_step_end" in accepts:
            kwargs["callback_on_step_end"] = _step_callback(control, steps)
        try:
            with torch.inference_mode():
                output = pipe(**kwargs)
        except GenhookError:
            raise
        except Exception as exc:
            raise _pipeline_error(exc) from exc
        images = getattr(output, "images", None)
        if images is None or len(images) == 0:
            raise GenhookError(ErrorCode.BACKEND_ERROR, "diffusers: the pipeline made no image")
        return to_pixels(images[0], request.width, request.height)


def choose_placement(setting: str) -> Placement:
    """Device and dtype for ``setting`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    import torch

    kind, _, index = setting.partition(":")
    if kind == "auto":
        if torch.cuda.is_available():
            return _cuda("cuda", torch)
        if _mps_available(torch):
            return Placement("mps", "float16", "Apple MPS, float16")
        return Placement("cpu", "float32", "the CPU, float32")
    if kind == "cpu":
        return Placement("cpu", "float32", "the CPU, float32")
    if kind == "mps":
        if not _mps_available(torch):
            raise GenhookError(
                ErrorCode.BACKEND_NOT_CONFIGURED,
                "GENHOOK_DIFFUSERS_DEVICE is mps but this torch sees no Apple MPS device",
            )
        return Placement("mps", "float16", "Apple MPS, float16")
    if kind == "cuda":
        if not torch.cuda.is_available():
            built = "a CPU-only torch build" if torch.version.cuda is None else "no CUDA device"
            raise GenhookError(
                ErrorCode.BACKEND_NOT_CONFIGURED,
                f"GENHOOK_DIFFUSERS_DEVICE is {setting} but torch sees no GPU ({built})",
            )
        count = torch.cuda.device_count()
        if index and not (index.isdigit() and int(index) < count):
            raise GenhookError(
                ErrorCode.BACKEND_NOT_CONFIGURED,
                f"GENHOOK_DIFFUSERS_DEVICE is {setting} but torch sees {count} CUDA device(s)"
                f" (cuda:0..cuda:{count - 1})",
            )
        return _cuda(setting, torch)
    raise GenhookError(
        ErrorCode.BACKEND_NOT_CONFIGURED,
        f"GENHOOK_DIFFUSERS_DEVICE {setting!r}: accepts auto, cpu, cuda, cuda:N or mps",
    )


def _cuda(device: str, torch: Any) -> Placement:
    index = int(device.partition(":")[2] or 0)
    name = torch.cuda.get_device_name(index)
    with torch.cuda.device(index):
        bf16 = bool(torch.cuda.is_bf16_supported())
    dtype = "bfloat16" if bf16 else "float16"
    return Placement(device, dtype, f"{device} ({name}), {dtype}")


def _mps_available(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def load_pipeline(folder: Path, placement: Placement) -> Any:
    """The text-to-image pipeline in ``folder`` on ``placement`` (never downloads);
    ``backend_not_configured`` naming what is wrong with the folder."""
    import diffusers
    import torch

    dtype = getattr(torch, placement.dtype)
    auto: Any = diffusers.AutoPipelineForText2Image  # untyped in diffusers
    generic: Any = diffusers.DiffusionPipeline
    try:
        try:
            pipe = auto.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        except ValueError as exc:  # a pipeline class the auto mapping does not know
            if "AutoPipeline" not in str(exc):
                raise
            pipe = generic.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        pipe = pipe.to(placement.device)
    except GenhookError:
        raise
    except Exception as exc:  # a broken folder: missing component, bad weights, bad config
        if _out_of_memory(exc):
            raise _pipeline_error(exc) from exc
        raise GenhookError(
            ErrorCode.BACKEND_NOT_CONFIGURED,
            f"diffusers: cannot load the pipeline in {folder.name}: {_clip(exc)}",
        ) from exc
    with contextlib.suppress(AttributeError):  # a pipeline without a progress bar
        pipe.set_progress_bar_config(disable=True)
    return pipe


def size_multiple(pipe: Any) -> int:
    """The side every image of ``pipe`` must be a multiple of: 8 x its VAE scale factor."""
    scale = getattr(pipe, "vae_scale_factor", 8)
    return 8 * int(scale) if isinstance(scale, int) and scale > 0 else 64


def round_size(side: int, multiple: int) -> int:
    """``side`` rounded to the nearest multiple of ``multiple`` (at least one multiple)."""
    return max(multiple, round(side / multiple) * multiple)


def to_pixels(image: Any, width: int, height: int) -> Pixels:
    """A pipeline's ``np`` output image (floats in 0..1, ``(h, w, 3)``) as uint8 RGB at
    ``width x height`` (resized with Lanczos where the pipeline's size differed)."""
    from PIL import Image

    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise GenhookError(
            ErrorCode.BACKEND_ERROR, f"diffusers: the pipeline made an image of shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise GenhookError(
            ErrorCode.BACKEND_ERROR,
            "diffusers: the image has NaN values (float16 overflow in the VAE is a usual "
            "cause; a bfloat16 GPU or a float16-fixed VAE avoids it)",
        )
    rgb = array[:, :, :3] if array.shape[2] != 1 else np.repeat(array, 3, axis=2)
    pixels = (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if pixels.shape[:2] != (height, width):
        resized = Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS)
        pixels = np.asarray(resized, dtype=np.uint8)
    return np.ascontiguousarray(pixels)


def _steps(options: Mapping[str, Any]) -> int:
    """Denoising steps from the options (``steps`` or ``num_inference_steps``)."""
    value = options.get("steps", options.get("num_inference_steps", DEFAULT_STEPS))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_STEPS:
        raise GenhookError(
            ErrorCode.BACKEND_REJECTED,
            f"diffusers: options.steps {value!r}: accepts a whole number 1..{MAX_STEPS}",
        )
    return value


def _step_callback(control: Control, steps: int) -> Any:
    """``callback_on_step_end``: progress after each step; cancel and deadline between steps."""

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = getattr(pipe, "num_timesteps", None)
        total = total if isinstance(total, int) and total > 0 else steps
        control.progress(step + 1, total)
        if step + 1 < total:  # past the last step only the decode is left: let it finish
            control.check()
        return tensors

    return on_step_end


def _call_parameters(pipe: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(pipe.__call__).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def _pipeline_error(exc: BaseException) -> GenhookError:
    """A failure inside the pipeline as a transient ``backend_error`` (out of memory said so)."""
    if _out_of_memory(exc):
        _free_gpu_memory()
        return GenhookError(
            ErrorCode.BACKEND_ERROR,
            "diffusers: the GPU ran out of memory (a smaller width/height, fewer jobs on this "
            f"GPU or a float16 model may fit): {_clip(exc)}",
        )
    return GenhookError(ErrorCode.BACKEND_ERROR, f"diffusers: the pipeline failed: {_clip(exc)}")


def _free_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _pipeline_class(folder: Path) -> str:
    """The pipeline class ``model_index.json`` names (``?`` if none)."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "?"
    name = index.get("_class_name") if isinstance(index, dict) else None
    return str(name) if name else "?"


def _components(index: Mapping[str, Any]) -> list[str]:
    """The components ``model_index.json`` names (``unet``, ``vae``...), each one a sub-folder;
    one given as ``[null, null]`` (e.g. no safety checker) is none."""
    return [
        name
        for name, value in index.items()
        if not name.startswith("_")
        and isinstance(value, list)
        and len(value) == 2
        and all(isinstance(part, str) for part in value)
    ]


def _clip(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"
