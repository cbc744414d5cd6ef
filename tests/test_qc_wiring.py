"""The content checks wired end to end: a template's ``near_duplicate`` and ``nsfw`` params
through the real worker, engine and store (SQLite, and PostgreSQL where one is reachable).

The engine is the scripted fake remote backend of tests.fakes (it answers the n-th request with
the n-th scripted image, the last one repeating); everything of genhook's runs for real: the
quality_check node, the export's ``phash`` per output, the stored payloads, and the worker's
read of the recent outputs of the same service, workflow and external id.
"""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skimage import data as skdata

from genhook.backends.base import BackendRegistry
from genhook.clock import ManualClock
from genhook.config import Settings
from genhook.engine import Engine
from genhook.media import similarity
from genhook.media.similarity import RecentHash
from genhook.presets import Presets
from genhook.storage import LocalStorage
from genhook.store.store import Store
from genhook.worker import Worker, output_hashes, wants_recent_hashes
from tests.databases import database_url
from tests.fakes import SCRIPTED_PRICING, ScriptedBackend

PHOTO = np.ascontiguousarray(skdata.astronaut())
OTHER = np.ascontiguousarray(skdata.coffee())


def flow(checks: str) -> str:
    """A workflow keyed by ``item_id`` whose quality check has ``checks`` turned on."""
    return textwrap.dedent(
        """\
        id: wired
        external_id: item_id
        input:
          required: [item_id]
          properties:
            item_id: {type: string}
        nodes:
          image:
            kind: generate
            with:
              backend: scripted
              model: m1
              prompt: "photo of ${input.item_id}"
              width: 256
              height: 256
          qc:
            kind: quality_check
            with:
              result: ${image.result}
              max_retries: 1
              on_fail: deliver_with_warning
              CHECKS
          export:
            kind: export
            with:
              image: ${qc.renders}
              platforms: [avatar, instagram_feed]
        outputs:
          assets:
            - ${export.assets}
        """
    ).replace("CHECKS", checks)


class World:
    """A store, an engine whose one backend is the scripted fake, and a worker."""

    def __init__(
        self, tmp: Path, presets: Presets, url: str, checks: str, script: list[Any]
    ) -> None:
        (tmp / "flows").mkdir()
        (tmp / "flows" / "wired.yaml").write_text(flow(checks), encoding="utf-8")
        self.store = Store(url, ManualClock())
        self.store.migrate()
        self.backend = ScriptedBackend(script)
        backends = BackendRegistry()
        backends.register(self.backend)
        self.engine = Engine.load(
            tmp / "flows", presets=presets, backends=backends, pricing=SCRIPTED_PRICING
        )
        settings = Settings(data_dir=tmp).resolved()
        storage = LocalStorage(tmp / "assets", "http://genhook.test")
        self.worker = Worker(self.store, self.engine, storage, settings, name="w1")
        self.service = self.store.create_service("shop")

    def run(self, item: str) -> dict[str, Any]:
        """Submit a job for ``item``, run it to its end, and return its stored payload."""
        job, _ = self.store.submit(
            service_id=self.service["service_id"],
            workflow_id="wired",
            workflow_version=1,
            trigger={"item_id": item},
            external_id=item,
            callback_url=None,
        )
        assert self.worker.run_once()
        stored = self.store.job(str(job.id))
        assert stored is not None and stored.status == "succeeded", stored
        result: dict[str, Any] = stored.result
        return result


@pytest.fixture(params=["sqlite", "postgresql"])
def world_factory(
    request: pytest.FixtureRequest, tmp_path: Path, presets: Presets
) -> Iterator[Any]:
    worlds: list[World] = []
    with database_url(request.param, tmp_path) as url:

        def make(checks: str, script: list[Any]) -> World:
            world = World(tmp_path, presets, url, checks, script)
            worlds.append(world)
            return world

        yield make
        for world in worlds:
            world.store.close()


def near_duplicates(payload: dict[str, Any]) -> list[dict[str, Any]]:
    warning = payload["quality_warning"] or {"failed_checks": []}
    return [c for c in warning["failed_checks"] if c["check"] == "near_duplicate"]


def test_the_same_external_id_making_the_same_image_again_is_a_near_duplicate(
    world_factory: Any,
) -> None:
    """Job 1 passes and its outputs carry the image's hash; job 2 (same item, the engine
    answering the same image twice) fails near_duplicate on both attempts, retried with the
    prompt amended, and is delivered with a warning naming job 1; a different image for the
    same item passes, and so does the same image for another item."""
    world = world_factory("near_duplicate: {max_distance: 6}", [PHOTO, PHOTO, PHOTO, OTHER])

    first = world.run("A1")
    assert first["quality_warning"] is None
    hashes = {o["phash"] for o in first["outputs"]}
    assert len(first["outputs"]) == 2 and hashes == {similarity.phash(PHOTO)}

    second = world.run("A1")
    [check] = near_duplicates(second)
    assert check["node"] == "qc" and check["resembles"] == first["job_id"]
    assert check["measured"] == 0.0 and check["threshold"] == 7.0
    assert "qc: 2" in second["quality_warning"]["message"]  # the first try and one retry
    assert "a fresh composition from a different angle" in world.backend.requests[2].prompt
    assert second["outputs"], "deliver_with_warning delivers the best candidate"

    third = world.run("A1")  # another image: ~32 bits from both earlier jobs' hash
    assert near_duplicates(third) == []
    assert {o["phash"] for o in third["outputs"]} == {similarity.phash(OTHER)}

    other_item = world.run("B1")  # job 3's image again, but for another external id
    assert near_duplicates(other_item) == []

    recent = world.store.recent_outputs(
        world.service["service_id"], "wired", "A1", exclude=third["job_id"]
    )
    assert [job_id for job_id, _ in recent] == [second["job_id"], first["job_id"]]


def test_no_near_duplicate_check_no_look_up_and_no_failure(world_factory: Any) -> None:
    """Without the param, the same image twice for one item passes (the check is off by
    default), and the outputs still carry their hash."""
    world = world_factory("min_contrast: 8", [PHOTO])
    first = world.run("A1")
    second = world.run("A1")
    assert second["quality_warning"] is None
    assert {o["phash"] for o in second["outputs"]} == {o["phash"] for o in first["outputs"]}


@pytest.mark.skipif(importlib.util.find_spec("nudenet") is None, reason="no nsfw extra")
def test_a_template_asking_for_nsfw_loads_and_a_benign_image_passes(world_factory: Any) -> None:
    world = world_factory("nsfw: {max_score: 0.5}", [PHOTO])
    spec = world.engine.workflow("wired").nodes["qc"]
    assert spec.params["nsfw"] == {"max_score": 0.5}
    payload = world.run("A1")
    assert payload["quality_warning"] is None
    assert len(world.backend.requests) == 1  # passed at once: no retry


def test_output_hashes_keep_order_drop_repeats_and_anything_not_a_hash() -> None:
    h1, h2 = "0123456789abcdef", "fedcba9876543210"
    payloads = [
        ("job_b", {"outputs": [{"phash": h1}, {"phash": h1}, {"asset_type": "video"}]}),
        ("job_a", {"outputs": [{"phash": h2}, {"phash": "not-a-hash"}, {"phash": None}, "x"]}),
        ("job_c", {"outputs": None}),
        ("job_d", {}),
    ]
    assert output_hashes(payloads) == [RecentHash("job_b", h1), RecentHash("job_a", h2)]


def test_only_a_workflow_asking_for_near_duplicate_reads_recent_outputs(
    world_factory: Any,
) -> None:
    """No look-up for the workflows that do not ask (the shipped ones don't)."""
    asking = world_factory("near_duplicate: {max_distance: 4}", [PHOTO])
    assert wants_recent_hashes(asking.engine.workflow("wired"))
    shipped = Engine.load().workflows.values()
    assert shipped and not any(wants_recent_hashes(w) for w in shipped)
