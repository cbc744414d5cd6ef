"""Near-duplicate QC by perceptual hash, and the image checks on a non-procedural backend."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest
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


# -- clips: a perceptual hash per clip, compared like an image's -------------------------------


def procedural_clip(
    folder: Path, subject: str, seed: int, seconds: float = 2.0, size: tuple[int, int] = (180, 320)
) -> Path:
    """A real clip (PyAV, H.264) of the procedural backend: ``subject``'s scene for ``seed``
    under its camera move, at 24 fps."""
    from genhook.backends.base import Control
    from genhook.backends.procedural import ProceduralBackend

    request = GenerationRequest(
        prompt=f"product video of a {subject}",
        negative_prompt="",
        width=size[0],
        height=size[1],
        seed=seed,
        model="procedural-v1",
        subject=subject,
        kind="video",
        duration_seconds=seconds,
        fps=24.0,
    )
    made = ProceduralBackend().generate(
        request, Control(workdir=folder / f"{subject}-{seed}-{seconds}")
    )
    assert made.video is not None
    return made.video.path


def rgb_frames(path: Path) -> list[Pixels]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def write_clip(
    path: Path, frames: list[Pixels], size: tuple[int, int] | None = None, crf: int = 18
) -> Path:
    """``frames`` as an H.264 MP4 at 24 fps (scaled to ``size``, at ``crf``), with PyAV."""
    import av

    height, width = frames[0].shape[:2]
    w, h = size or (width, height)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf)}
        for pixels in frames:
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(width=w, height=h)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Renders of one scene (the mug, seed 1: again, 3 s long, re-encoded smaller at CRF 32,
    faded in from black), and of others (another composition of the mug, other products, and a
    clip that starts as the mug's and cuts to the lamp's at 40 %)."""
    folder = tmp_path_factory.mktemp("clips")
    made = {
        "mug": procedural_clip(folder, "Ceramic Mug", 1),
        "mug again": procedural_clip(folder / "again", "Ceramic Mug", 1),
        "mug 3 s": procedural_clip(folder, "Ceramic Mug", 1, seconds=3.0),
        "mug seed 3": procedural_clip(folder, "Ceramic Mug", 3),
        "shirt": procedural_clip(folder, "Linen Shirt", 1),
        "lamp": procedural_clip(folder, "Brass Desk Lamp", 1),
    }
    mug, lamp = rgb_frames(made["mug"]), rgb_frames(made["lamp"])
    cut = int(len(mug) * 0.4)
    made["mug re-encoded"] = write_clip(folder / "small.mp4", mug, (144, 256), crf=32)
    made["mug cut to lamp"] = write_clip(folder / "cut.mp4", mug[:cut] + lamp[cut:])
    fade = len(mug) * 15 // 100
    made["mug faded in"] = write_clip(
        folder / "fade.mp4",
        [(p * (i / fade)).astype(np.uint8) if i < fade else p for i, p in enumerate(mug)],
    )
    return made


def test_a_clips_hash_is_the_same_from_video_qc_the_export_and_a_plain_decode(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """The payload's hash (the export's, fed by its one decode) is the one video QC measures
    and the one a plain decode gives: a clip delivered once is found again by the check."""
    from genhook.media.similarity import video_phash
    from genhook.media.video_export import VideoTarget, export_video
    from genhook.media.video_qc import measure_video

    source = clips["mug"]
    value = video_phash(source)
    assert value is not None and valid(value)
    assert measure_video(source).phash == value
    targets = [
        VideoTarget("tall", 180, 320, "crop", 23, "#ffffff"),
        VideoTarget("square", 120, 120, "pad", 23, "#ffffff"),
    ]
    made = export_video(source, targets, tmp_path, stem_for=lambda t: t.code)
    assert [m.phash for m in made] == [value, value]
    # the exported square (padded, smaller) is still the same scene to the hash
    assert distance(value, video_phash(made[1].path) or "") <= 12


def test_renders_of_the_same_scene_are_near_and_other_scenes_far(
    clips: dict[str, Path],
) -> None:
    """Measured here: the same render again 0 bits, a 3 s render of the same shot and the
    render re-encoded smaller at CRF 32 0-3 bits, a fade-in 2; another composition of the same
    product, other products and a clip that cuts to another scene at 40 % 14-30 bits."""
    from genhook.media.similarity import video_phash

    hashes = {name: video_phash(path) or "" for name, path in clips.items()}
    mug = hashes["mug"]
    assert hashes["mug again"] == mug
    for same in ("mug 3 s", "mug re-encoded", "mug faded in"):
        assert distance(mug, hashes[same]) <= 4, same
    for other in ("mug seed 3", "shirt", "lamp", "mug cut to lamp"):
        assert distance(mug, hashes[other]) > 12, other
    # one frame alone would have called the cut a duplicate: its first third is the mug's
    mug_frames, cut_frames = rgb_frames(clips["mug"]), rgb_frames(clips["mug cut to lamp"])
    third = len(mug_frames) // 3
    assert distance(phash(cut_frames[third]), phash(mug_frames[third])) <= 4


def test_near_duplicate_on_a_clip_compares_the_clips_hash(clips: dict[str, Path]) -> None:
    """The check given a clip's hash fails on a recent output of the same scene, naming its
    job, and passes against other scenes (the poster frame's own hash is not what it uses)."""
    from genhook.media.similarity import video_phash

    clip_hash = video_phash(clips["mug"])
    poster = rgb_frames(clips["mug"])[0]
    checks = ContentChecks(near_duplicate_max_distance=6)
    before = [
        RecentHash("job_lamp", video_phash(clips["lamp"]) or ""),
        RecentHash("job_mug", video_phash(clips["mug re-encoded"]) or ""),
    ]
    (failed,) = content_checks(poster, checks, before, clip_hash)
    assert failed.check == "near_duplicate" and failed.resembles == "job_mug"
    assert failed.measured <= 4
    others = [RecentHash("job_shirt", video_phash(clips["shirt"]) or ""), before[0]]
    assert content_checks(poster, checks, others, clip_hash) == []


@pytest.mark.parametrize("db_kind", ["sqlite", "postgresql"])
def test_product_video_again_for_the_same_product_is_a_near_duplicate(
    tmp_path: Path, db_kind: str
) -> None:
    """product-video (procedural, small) with ``near_duplicate`` on, through the real worker
    and store: each video output carries the clip's phash; the same trigger again (the same
    seed, so the same clip) fails near_duplicate naming the first job and is delivered with
    the warning; another product under the same id passes, and so does the first clip again
    for another product id."""
    from jsonschema import Draft202012Validator

    from genhook.backends.procedural import ProceduralBackend
    from genhook.clock import ManualClock
    from genhook.config import Settings
    from genhook.contract.schema import completion_schema
    from genhook.presets import load_presets
    from genhook.pricing import load_pricing
    from genhook.storage import LocalStorage
    from genhook.store.store import Store
    from genhook.worker import Worker
    from tests.databases import database_url
    from tests.test_video_pipeline import TRIGGER, small_install

    env = small_install(tmp_path)
    flow = Path(env["GENHOOK_WORKFLOWS_DIR"]) / "product-video.yaml"
    text = flow.read_text(encoding="utf-8")
    qc = "      max_retries: 1\n      on_fail: deliver_with_warning\n"
    assert qc in text, "the shipped product-video QC changed: update this test"
    ours = "      max_retries: 0\n      on_fail: deliver_with_warning\n"
    flow.write_text(
        text.replace(qc, ours + "      near_duplicate: {max_distance: 6}\n"), encoding="utf-8"
    )
    presets_dir = Path(env["GENHOOK_PRESETS_DIR"])
    backends = BackendRegistry()
    backends.register(ProceduralBackend())
    engine = Engine.load(
        flow.parent,
        presets=load_presets(presets_dir),
        backends=backends,
        pricing=load_pricing(presets_dir / "pricing.yaml"),
    )
    schema = Draft202012Validator(completion_schema())
    with database_url(db_kind, tmp_path) as url:
        store = Store(url, ManualClock())
        try:
            store.migrate()
            worker = Worker(
                store,
                engine,
                LocalStorage(tmp_path / "assets", "http://genhook.test"),
                Settings(data_dir=tmp_path).resolved(),
                name="w1",
            )
            service = store.create_service("shop")

            def run(**changes: object) -> dict[str, object]:
                asked = {**TRIGGER, "target_platform": "short_video_pack", **changes}
                trigger = check_trigger(engine.workflow("product-video"), asked).input
                job, _ = store.submit(
                    service_id=service["service_id"],
                    workflow_id="product-video",
                    workflow_version=1,
                    trigger=trigger,
                    external_id=str(trigger["product_id"]),
                    callback_url=None,
                )
                assert worker.run_once()
                stored = store.job(str(job.id))
                assert stored is not None and stored.status == "succeeded", (
                    stored.error_code,
                    (stored.result or {}).get("error"),
                )
                schema.validate(stored.result)
                result: dict[str, object] = stored.result
                return result

            def hashes(payload: dict[str, object]) -> set[str]:
                outputs = payload["outputs"]
                assert isinstance(outputs, list) and len(outputs) == 2  # tiktok, reel
                assert all(o["asset_type"] == "video" for o in outputs)
                return {o["phash"] for o in outputs}

            def near(payload: dict[str, object]) -> list[dict[str, object]]:
                warning = payload["quality_warning"] or {"failed_checks": []}
                assert isinstance(warning, dict)
                return [c for c in warning["failed_checks"] if c["check"] == "near_duplicate"]

            first = run()
            assert first["quality_warning"] is None
            (made,) = hashes(first)  # one tall clip for both presets: one hash
            assert valid(made)

            again = run()
            (check,) = near(again)
            assert check["resembles"] == first["job_id"] and check["measured"] == 0.0
            assert hashes(again) == {made}

            other = run(product_name="Brass Desk Lamp")  # the same id, another scene
            assert near(other) == []
            (lamp,) = hashes(other)
            assert distance(made, lamp) > 12

            elsewhere = run(product_id="SKU-999")  # the mug's scene, but another product id
            assert near(elsewhere) == []
        finally:
            store.close()
