"""The quality-check policy driven by real images that fail real checks."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from genhook.backends.base import BackendRegistry
from genhook.engine import Engine
from genhook.media import Pixels
from genhook.presets import Presets
from genhook.quality import FailedCheck, missing_glyphs, retry_may_help
from genhook.sinks import DirectorySink
from tests.fakes import SCRIPTED_PRICING, ScriptedBackend

TEMPLATE = textwrap.dedent(
    """\
    id: qc-test
    input:
      required: [name]
      properties:
        name: {{type: string}}
    nodes:
      image:
        kind: generate
        with:
          backend: scripted
          model: m1
          prompt: "portrait of ${{input.name}}"
          width: 512
          height: 512
      qc:
        kind: quality_check
        with:
          result: ${{image.result}}
          faces: {faces}
          max_retries: {retries}
          on_fail: {on_fail}
      export:
        kind: export
        with:
          image: ${{qc.image}}
          platforms: avatar
    outputs:
      assets:
        - ${{export.assets}}
    """
)


def sharp_photo() -> Pixels:
    return np.ascontiguousarray(skdata.astronaut())


def blurred_photo() -> Pixels:
    return np.ascontiguousarray(cv2.GaussianBlur(skdata.astronaut(), (0, 0), 8))


def flat_grey() -> Pixels:
    return np.full((512, 512, 3), 128, dtype=np.uint8)


def scenery() -> Pixels:
    """A real photo without a face (coffee cup), resized to 512x512."""
    return np.ascontiguousarray(cv2.resize(skdata.coffee(), (512, 512)))


def run(
    tmp_path: Path,
    presets: Presets,
    script: list[Any],
    *,
    faces: str = "ignore",
    retries: int = 2,
    on_fail: str = "deliver_with_warning",
) -> tuple[dict[str, Any], ScriptedBackend]:
    wf_dir = tmp_path / "wf"
    wf_dir.mkdir()
    (wf_dir / "qc.yaml").write_text(
        TEMPLATE.format(faces=faces, retries=retries, on_fail=on_fail), encoding="utf-8"
    )
    backend = ScriptedBackend(script)
    backends = BackendRegistry()
    backends.register(backend)
    engine = Engine.load(wf_dir, presets=presets, backends=backends, pricing=SCRIPTED_PRICING)
    outcome = engine.execute(
        engine.workflow("qc-test"), {"name": "Ada"}, DirectorySink(tmp_path / "out")
    )
    return outcome.payload.to_json(), backend


def test_retry_with_modified_prompt_then_pass(tmp_path: Path, presets: Presets) -> None:
    """A blurred first output is regenerated with a sharper prompt and a new seed, then passes."""
    payload, backend = run(tmp_path, presets, [blurred_photo(), sharp_photo()])
    assert payload["status"] == "success"
    assert payload["quality_warning"] is None
    first, second = backend.requests
    assert "sharp focus" not in first.prompt and "sharp focus" in second.prompt
    assert first.seed != second.seed
    assert payload["metadata"]["prompt_used"] == second.prompt
    assert payload["metadata"]["seed"] == second.seed
    assert payload["metadata"]["generations"] == 2
    assert payload["metadata"]["credit_cost"] == pytest.approx(3.0)


def test_each_retry_amends_the_original_prompt_once(tmp_path: Path, presets: Presets) -> None:
    """Every retry is the template's prompt plus one fix: the second retry does not append the
    fix again to the first retry's already amended prompt."""
    payload, backend = run(tmp_path, presets, [flat_grey(), flat_grey(), sharp_photo()])
    assert payload["status"] == "success"
    first, second, third = backend.requests
    assert second.prompt.startswith(first.prompt + ", ")
    assert third.prompt == second.prompt, "the same checks failed, so the same single fix"
    assert third.prompt.count("sharp focus") == 1
    assert len({first.seed, second.seed, third.seed}) == 3


def test_deliver_best_with_warning(tmp_path: Path, presets: Presets) -> None:
    """When nothing passes, the best candidate is delivered with a warning saying by how much."""
    payload, backend = run(tmp_path, presets, [flat_grey(), blurred_photo(), flat_grey()])
    assert len(backend.requests) == 3
    assert payload["status"] == "success"
    warning = payload["quality_warning"]
    assert warning is not None
    checks = {c["check"]: c for c in warning["failed_checks"]}
    assert set(checks) == {"sharpness"}, "the blurred photo beats the flat grey ones"
    assert checks["sharpness"]["measured"] < checks["sharpness"]["threshold"]
    assert 0 < checks["sharpness"]["shortfall"] <= 1
    assert payload["metadata"]["seed"] == backend.requests[1].seed
    (output,) = payload["outputs"]
    delivered = np.asarray(Image.open(output["asset_url"].removeprefix("file://")).convert("L"))
    assert delivered.std() > 5, "the delivered file is the blurred photo, not the flat grey"


def test_fail_policy_fails_the_job(tmp_path: Path, presets: Presets) -> None:
    """With on_fail: fail, a job whose outputs never pass fails with quality_check_failed."""
    payload, backend = run(tmp_path, presets, [flat_grey()], retries=1, on_fail="fail")
    assert len(backend.requests) == 2
    assert payload["status"] == "failed" and payload["event"] == "job.failed"
    assert payload["outputs"] == []
    assert payload["error"]["error_code"] == "quality_check_failed"
    assert payload["error"]["field"] is None
    assert "contrast" in payload["error"]["error_description"]


def test_required_face_missing_triggers_face_prompt(tmp_path: Path, presets: Presets) -> None:
    """A workflow that requires a face retries a faceless photo asking for a visible face."""
    payload, backend = run(tmp_path, presets, [scenery(), sharp_photo()], faces="require")
    assert payload["status"] == "success" and payload["quality_warning"] is None
    assert "clearly visible face" in backend.requests[1].prompt


def test_forbidden_face_is_a_warning(tmp_path: Path, presets: Presets) -> None:
    """A workflow that forbids faces flags a photo with a face (confidence above the limit)."""
    payload, _ = run(tmp_path, presets, [sharp_photo()], faces="forbid", retries=0)
    warning = payload["quality_warning"]
    assert warning is not None
    (check,) = warning["failed_checks"]
    assert check["check"] == "face_confidence" and check["measured"] > check["threshold"]


def test_missing_glyphs_alone_is_not_retried_but_with_other_failures_is() -> None:
    """A retry cannot draw a glyph no font has; it can still fix blur failing beside it."""
    glyphs = missing_glyphs(["\ue000", "\ue000", "\U0001f600"])
    assert glyphs is not None and glyphs.characters == ("\ue000", "\U0001f600")
    assert glyphs.to_dict()["characters"] == ["\ue000", "\U0001f600"]
    assert "U+E000" in glyphs.describe() and "U+1F600" in glyphs.describe()
    blur = FailedCheck("sharpness", 11.8, 30.0, ">=", 0.6067)
    assert "characters" not in blur.to_dict()
    assert missing_glyphs([]) is None
    assert not retry_may_help([glyphs])
    assert retry_may_help([glyphs, blur])
