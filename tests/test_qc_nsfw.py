"""The optional NSFW check: NudeNet's shipped model, loaded offline from its installed package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from genhook.media import nsfw as nsfw_module
from genhook.quality import ContentChecks, content_checks, content_problem, nsfw
from tests.test_qc_similarity import product

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("nudenet") is None, reason="the nsfw extra is not installed"
)


def benign() -> np.ndarray:
    return product(9)


def test_the_model_ships_in_the_package_and_loads_once() -> None:
    spec = importlib.util.find_spec("nudenet")
    assert spec is not None and spec.origin is not None
    model = Path(spec.origin).parent / "320n.onnx"
    assert model.is_file() and model.stat().st_size > 1_000_000  # in the wheel, not a download
    first = nsfw_module.detector()
    assert nsfw_module.detector() is first


def test_a_benign_image_passes() -> None:
    image = benign()
    assert nsfw_module.detect(image) == {}
    assert nsfw(image, 0.5) is None
    assert content_checks(image, ContentChecks(nsfw_max_score=0.2)) == []


def test_off_by_default_and_available_here() -> None:
    assert ContentChecks().active == ()
    assert ContentChecks(nsfw_max_score=0.5).active == ("nsfw",)
    assert content_problem(ContentChecks(nsfw_max_score=0.5)) is None


def test_without_nudenet_a_template_asking_for_it_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nudenet", None)  # what find_spec sees when absent
    problem = content_problem(ContentChecks(nsfw_max_score=0.5))
    assert problem is not None and "pip install genhook[nsfw]" in problem
    assert content_problem(ContentChecks(near_duplicate_max_distance=6)) is None
