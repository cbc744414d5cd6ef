"""Asset sinks that need no server: a local directory (``genhook run --out DIR``)."""

from __future__ import annotations

import os
from pathlib import Path

from genhook.workflow.result import Asset


class DirectorySink:
    """Writes each asset as ``DIR/<filename>``; its URL is the file's ``file://`` URL."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(self, job_id: str, asset: Asset) -> str:
        """Write atomically (temporary name, then rename) and return the ``file://`` URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / asset.filename
        tmp = target.with_name(f".{asset.filename}.{job_id}.tmp")
        tmp.write_bytes(asset.data)
        os.replace(tmp, target)
        return target.resolve().as_uri()
