"""Where the service keeps asset bytes: local files under ``GENHOOK_DATA_DIR/assets``."""

from __future__ import annotations

import mimetypes
import os
import re
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from genhook.workflow.result import Asset

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MEDIA_TYPES = {".avif": "image/avif", ".webp": "image/webp", ".mp4": "video/mp4"}


class LocalStorage:
    """Files at ``root/<job_id>/<filename>``, served by the API under ``/assets/``."""

    def __init__(self, root: Path, public_url: str) -> None:
        self.root = root
        self.public_url = public_url.rstrip("/")

    @classmethod
    def from_url(cls, storage_url: str, public_url: str) -> LocalStorage:
        """``file:///path`` storage; other schemes are refused with a clear message."""
        parts = urlsplit(storage_url)
        if parts.scheme != "file":
            raise ValueError(
                f"GENHOOK_STORAGE_URL scheme {parts.scheme!r} is not supported by this install "
                "(use file://)"
            )
        return cls(Path(unquote(parts.path)), public_url)

    def put(self, job_id: str, asset: Asset) -> str:
        """Write atomically; return the public ``asset_url``."""
        directory = self.root / job_id
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / asset.filename
        tmp = directory / f".{asset.filename}.tmp"
        tmp.write_bytes(asset.data)
        os.replace(tmp, target)
        return f"{self.public_url}/assets/{quote(job_id)}/{quote(asset.filename)}"

    def path(self, job_id: str, filename: str) -> Path | None:
        """The file behind ``/assets/<job_id>/<filename>``, or None (also for unsafe names)."""
        if not (_SAFE.match(job_id) and _SAFE.match(filename)):
            return None
        path = self.root / job_id / filename
        return path if path.is_file() else None


def media_type(filename: str) -> str:
    """The Content-Type of an asset file."""
    suffix = Path(filename).suffix.lower()
    return (
        MEDIA_TYPES.get(suffix) or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    )
