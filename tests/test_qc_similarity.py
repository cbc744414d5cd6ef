"""Near-duplicate QC by perceptual hash, and the image checks on a non-procedural backend."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from textwrap import dedent

import numpy as np
from PIL import Image

from genhook.backends.base import BackendRegistry, GenerationRequest, GenerationResult
from genhook.engine import Engine
from genhook.media import Pixels
from genhook.media.procedural import render
from genhook.media.similarity import RecentHash, distance, nearest, phash, valid
from genhook.presets import Presets
from genhook.quality import ContentChecks, content_checks, near_duplicate, retry_may_help
from genhook.sinks import DirectorySink
from genhook.workflow.inputs import check_trigger
from tests.fakes import SCRIPTED_PRICING, ScriptedBackend


def product(seed: int, subject: str = "Ceramic Mug") -> Pixels:
    return render(
        prompt=f"product photograph of a {subject}",
        subject=subject,
        palette=["#1d3557", "#457b9d", "#a8dadc", "#f1faee"],
        lighting="softbox",
        width=384,
        height=384,
        seed=seed,
        label="",
    )


def reencoded(pixels: Pixels, size: int, quality: int = 70) -> Pixels:
    """``pixels`` resized and saved as JPEG: what a platform would do to a delivered image."""
    image = Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_hash_survives_resizing_and_jpeg_but_not_another_image() -> None:
    original = product(1)
    same = phash(original)
    assert valid(same) and same == phash(original.copy())
    assert distance(same, phash(reencoded(original, 200))) <= 4
    other = phash(product(2, "Linen Shirt"))
    assert distance(same, other) > 12


def test_near_duplicate_names_the_job_it_resembles() -> None:
    original = product(3)
    recent = [
        RecentHash("job_other", phash(product(4, "Linen Shirt"))),
        RecentHash("job_before", phash(reencoded(original, 256))),
        RecentHash("job_garbled", "not-a-hash"),
    ]
    failed = near_duplicate(original, recent, max_distance=6)
    assert failed is not None and failed.check == "near_duplicate"
    assert failed.resembles == "job_before" and failed.measured <= 6
    assert failed.threshold == 7 and failed.comparison == ">="
    out = failed.to_dict()
    assert out["resembles"] == "job_before" and "labels" not in out and "characters" not in out
    assert "resembles the output of job_before" in failed.describe()
    assert retry_may_help([failed])  # another seed makes another image


def test_unlike_outputs_pass_and_the_check_is_off_by_default() -> None:
    image = product(5)
    recent = [RecentHash("job_same", phash(image))]
    assert near_duplicate(image, [RecentHash("job_x", phash(product(6, "Linen Shirt")))], 6) is None
    assert near_duplicate(image, [], 6) is None
    assert nearest(phash(image), [RecentHash("job_bad", "zz")]) is None
    assert content_checks(image, ContentChecks(), recent) == []  # off: nothing compared
    (failed,) = content_checks(image, ContentChecks(near_duplicate_max_distance=0), recent)
    assert failed.measured == 0.0 and failed.resembles == "job_same"


# -- missing glyphs and crops apply to any backend's output -------------------------------------


@dataclass
class GlyphlessEngine(ScriptedBackend):
    """A non-procedural engine (the scripted one) that reports characters it could not set."""

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return replace(super().generate(request), missing_glyphs=("\u2603",))


REMOTE = dedent(
    """\
    id: remote
    version: 1
    external_id: sku
    input:
      required: [sku]
      properties:
        sku: {type: string}
    nodes:
      image:
        kind: generate
        with:
          backend: scripted
          model: m1
          prompt: a tall vase
          width: 512
          height: 512
          aspect_classes: single
      qc:
        kind: quality_check
        with:
          result: ${image.renders}
          max_retries: 0
      export:
        kind: export
        with:
          image: ${qc.renders}
          platforms: social_pack
    outputs:
      assets:
        - ${export.assets}
    """
)


def tall_subject() -> Pixels:
    """A grey square with a red column from its top edge to its bottom: wide crops cut it."""
    pixels = np.full((512, 512, 3), 128, dtype=np.uint8)
    pixels[:, 200:312] = (220, 30, 30)
    pixels[::16, 200:312] = 255  # some detail, so that it is not flat
    return pixels


def test_glyph_and_crop_checks_apply_to_a_non_procedural_backend(
    presets: Presets, tmp_path: Path
) -> None:
    wf_dir = tmp_path / "wf"
    wf_dir.mkdir()
    (wf_dir / "remote.yaml").write_text(REMOTE, encoding="utf-8")
    backend = GlyphlessEngine([tall_subject()])
    backends = BackendRegistry()
    backends.register(backend)
    engine = Engine.load(wf_dir, presets=presets, backends=backends, pricing=SCRIPTED_PRICING)
    wf = engine.workflow("remote")
    outcome = engine.execute(wf, check_trigger(wf, {"sku": "V-1"}).input, DirectorySink(tmp_path))
    assert outcome.result is not None
    (made,) = outcome.result.generations
    assert made.model_id == "scripted/m1" and made.request.backend == "scripted"
    payload = outcome.payload.to_json()
    failed = {c["check"]: c for c in payload["quality_warning"]["failed_checks"]}
    assert failed["missing_glyphs"]["characters"] == ["\u2603"]
    assert {"salient_region.x_post", "salient_region.facebook_link"} <= set(failed)
