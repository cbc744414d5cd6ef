"""Asset storage: local files and S3-compatible object storage (on a real moto server)."""

from __future__ import annotations

from pathlib import Path

from genhook.storage import LocalStorage
from genhook.workflow.result import Asset


def _asset(name: str, data: bytes = b"bytes") -> Asset:
    return Asset(
        data=data,
        filename=name,
        media_type="image/png",
        format="png",
        width=1,
        height=1,
        platform_code="test",
        alt_text="",
        caption="",
    )


def test_local_delete_job_removes_published_and_staged(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "assets", "http://genhook.test")
    storage.put("job_a", _asset("a.png"))
    staged = storage.attempt("job_a", 2)
    staged.put("job_a", _asset("b.png"))
    storage.put("job_b", _asset("keep.png"))
    storage.delete_job("job_a")
    assert not (tmp_path / "assets" / "job_a").exists()
    assert storage.path("job_b", "keep.png") is not None
    storage.delete_job("job_a")
    storage.delete_job("job_never")
