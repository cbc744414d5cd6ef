"""Where the service keeps asset bytes: local files under ``GENHOOK_DATA_DIR/assets`` (this
module), or objects on S3-compatible storage (:mod:`genhook.storage_s3`); :func:`open_storage`
picks one from ``GENHOOK_STORAGE_URL``. Both keep the same shape (:class:`AssetStorage`).

A job's published files live at ``root/<job_id>/<filename>``; those are what ``asset_url``
serves. A worker writes an attempt's files under an attempt-scoped name first
(``root/<job_id>/.attempt-<n>/``, which no URL can reach) and the store's finishing transaction
publishes them, so a worker that lost its lease and resumes later writes only its own staging
folder and never replaces the files (and ``sha256``) that the lease holder delivered.

The files hold customers' generated assets: folders are ``0700`` and files ``0600``.
"""

from __future__ import annotations

import mimetypes
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

from genhook.paths import private_dir
from genhook.workflow.result import Asset

if TYPE_CHECKING:
    from genhook.config import Settings

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MEDIA_TYPES = {".avif": "image/avif", ".webp": "image/webp", ".mp4": "video/mp4"}
FILE_MODE = 0o600


class Staging(Protocol):
    """One attempt's assets: staged by ``put``, made the job's by ``publish`` (inside the
    finishing transaction), or removed by ``discard``; ``folder`` is the attempt's local
    scratch folder (its generations' work files)."""

    @property
    def folder(self) -> Path: ...

    def put(self, job_id: str, asset: Asset) -> str: ...
    def publish(self) -> None: ...
    def discard(self) -> None: ...


class AssetStorage(Protocol):
    """Where published assets live, whatever the kind."""

    def put(self, job_id: str, asset: Asset) -> str: ...
    def attempt(self, job_id: str, number: int) -> Staging: ...
    def delete_job(self, job_id: str) -> None: ...
    def locate(self, job_id: str, filename: str) -> Path | str | None:
        """What ``/assets/<job_id>/<filename>`` serves: a local file (its bytes), a URL (a
        redirect to it), or None (no such asset)."""
        ...

    def probe(self, timeout: float) -> tuple[bool, str]:
        """Can assets be written now: one short check within ``timeout`` seconds (for
        ``/readyz``), and what it found, in words that name no path or secret."""
        ...


def open_storage(settings: Settings) -> AssetStorage:
    """The storage ``GENHOOK_STORAGE_URL`` names: ``file://`` or ``s3://`` (the ``s3`` extra)."""
    if urlsplit(settings.storage_url).scheme == "s3":
        from genhook.storage_s3 import S3Storage

        return S3Storage.from_settings(settings)
    return LocalStorage.from_url(settings.storage_url, settings.public_url)


def url_expires_at(url: str) -> datetime | None:
    """When a SigV4 presigned URL stops working (its ``X-Amz-Date`` plus ``X-Amz-Expires``),
    None for a URL that does not expire."""
    query = parse_qs(urlsplit(url).query)
    signed, expires = query.get("X-Amz-Date"), query.get("X-Amz-Expires")
    if not (signed and expires and expires[0].isdigit()):
        return None
    try:
        start = datetime.strptime(signed[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return start + timedelta(seconds=int(expires[0]))


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

    def url(self, job_id: str, filename: str) -> str:
        """The public ``asset_url`` of a job's file."""
        return f"{self.public_url}/assets/{quote(job_id)}/{quote(filename)}"

    def put(self, job_id: str, asset: Asset) -> str:
        """Write a published file atomically; return its ``asset_url``."""
        _write(self._job_dir(job_id), asset)
        return self.url(job_id, asset.filename)

    def attempt(self, job_id: str, number: int) -> AttemptAssets:
        """The staging area of attempt ``number`` of a job (the sink a worker writes to)."""
        return AttemptAssets(self, job_id, number)

    def path(self, job_id: str, filename: str) -> Path | None:
        """The file behind ``/assets/<job_id>/<filename>``, or None (also for unsafe names)."""
        if not (_SAFE.match(job_id) and _SAFE.match(filename)):
            return None
        path = self.root / job_id / filename
        return path if path.is_file() else None

    def delete_job(self, job_id: str) -> None:
        """Remove every file of a job, published and staged (a purge); a second call, or a job
        that never stored anything, does nothing."""
        if not _SAFE.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        shutil.rmtree(self.root / job_id, ignore_errors=True)

    def locate(self, job_id: str, filename: str) -> Path | None:
        """The file ``/assets/<job_id>/<filename>`` serves (see :meth:`path`)."""
        return self.path(job_id, filename)

    def probe(self, timeout: float) -> tuple[bool, str]:
        """The asset folder exists (made if missing) and this process may write in it."""
        del timeout  # a local check does not wait
        try:
            private_dir(self.root)
        except OSError as exc:
            return False, f"local asset folder cannot be made: {exc.strerror or exc}"
        if not os.access(self.root, os.W_OK | os.X_OK):
            return False, "local asset folder is not writable"
        return True, "local files, writable"

    def _job_dir(self, job_id: str) -> Path:
        private_dir(self.root)
        return private_dir(self.root / job_id)


class AttemptAssets:
    """One attempt's files, staged until the lease holder's finishing transaction publishes
    them (``publish``) or the attempt ends without delivering them (``discard``)."""

    def __init__(self, storage: LocalStorage, job_id: str, number: int) -> None:
        self.storage = storage
        self.job_id = job_id
        self.number = number
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        """The attempt's staging folder (its path made on first use: an attempt that never
        asks for it, such as a workflow of text nodes only, has nothing to publish or remove,
        and ``publish`` and ``discard`` then touch no file)."""
        if self._folder is None:
            self._folder = self.storage.root / self.job_id / f".attempt-{self.number}"
        return self._folder

    def put(self, job_id: str, asset: Asset) -> str:
        """Stage ``asset``; return the ``asset_url`` it will have once published."""
        if job_id != self.job_id:
            raise ValueError(f"attempt assets of {self.job_id} cannot hold {job_id}'s files")
        self.storage._job_dir(job_id)
        _write(private_dir(self.folder), asset)
        return self.storage.url(job_id, asset.filename)

    def publish(self) -> None:
        """Move every staged file to its published name (each move atomic)."""
        if self._folder is None or not self.folder.is_dir():
            return
        target = self.storage._job_dir(self.job_id)
        for staged in sorted(self.folder.iterdir()):
            if not staged.name.startswith("."):
                os.replace(staged, target / staged.name)
        shutil.rmtree(self.folder, ignore_errors=True)

    def discard(self) -> None:
        """Remove whatever this attempt staged and did not publish."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def _write(directory: Path, asset: Asset) -> None:
    """Write ``asset`` into ``directory`` through a temporary file, readable by its owner only."""
    target = directory / asset.filename
    tmp = directory / f".{asset.filename}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        out.write(asset.data)
    os.replace(tmp, target)


def media_type(filename: str) -> str:
    """The Content-Type of an asset file."""
    suffix = Path(filename).suffix.lower()
    return (
        MEDIA_TYPES.get(suffix) or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    )
