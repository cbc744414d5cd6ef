"""Assets on S3-compatible object storage (``GENHOOK_STORAGE_URL=s3://bucket/prefix``).

The same shape as :class:`genhook.storage.LocalStorage`: a job's published objects are
``prefix/<job_id>/<filename>``; an attempt uploads under ``prefix/<job_id>/.attempt-<n>/``
first, and the store's finishing transaction publishes them (a server-side copy to the final
key, then the staged keys deleted), so a worker that lost its lease never replaces the objects
(and ``sha256``) that the lease holder delivered. The end of every attempt deletes what it
staged and did not publish, and what earlier attempts of the job (lost with their workers) left
staged; a failed job leaves no object.

Every upload carries its Content-Type and ``Cache-Control: public, max-age=31536000,
immutable``, and a SHA-256 checksum that the server verifies; a file larger than one part
(8 MiB) goes up as a multipart upload, parts in parallel. Requests are retried on transient
failures (5xx, connection errors, timeouts) with exponential backoff, up to
:data:`MAX_RETRIES` times within :data:`RETRY_TIMEOUT`; past that a job's attempt fails with
``storage_unavailable`` (retryable: the job is tried again on the retry schedule).

``asset_url`` is, by ``GENHOOK_S3_URL_MODE``:

* ``presigned``: a SigV4 presigned GET URL valid for ``GENHOOK_S3_URL_EXPIRY`` (the payload
  says until when: ``url_expires_at``);
* ``public``: ``GENHOOK_S3_PUBLIC_URL/<key>`` (a CDN or a public bucket), or the bucket's own
  URL when that is not set;
* ``redirect``: genhook's own ``/assets/<job_id>/<filename>``, which answers with a redirect
  to a fresh presigned URL (so ``asset_url`` never expires while the job is kept).

A payload made long before it is delivered (a job held for review, then approved) has its
presigned URLs signed again when it is delivered: :func:`url_refresher`.

The client is obstore (chosen by measurement: docs/dependencies.md), imported on first use so
that an install without the ``s3`` extra runs on local files.
"""

from __future__ import annotations

import copy
import logging
import re
import shutil
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from genhook.api.assets import CACHE_CONTROL
from genhook.config import ConfigError, S3Settings
from genhook.contract.completion import zulu
from genhook.errors import ErrorCode, GenhookError
from genhook.paths import private_dir
from genhook.storage import media_type, url_expires_at
from genhook.workflow.result import Asset

if TYPE_CHECKING:
    from genhook.config import Settings

PART_BYTES = 8 * 1024 * 1024
"""Files larger than this go up as multipart uploads of parts this size."""
PARTS_IN_FLIGHT = 4
MAX_RETRIES = 5
RETRY_TIMEOUT = timedelta(seconds=60)
DELETE_BATCH = 1000
"""Keys per listing page and per delete request (S3's DeleteObjects takes at most 1,000)."""

log = logging.getLogger("genhook.storage")

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ATTEMPT = re.compile(r"^\.attempt-(\d+)/")


def storage_failure(action: str, exc: BaseException) -> GenhookError:
    """A failed request to the object store, as the retryable ``storage_unavailable``."""
    return GenhookError(
        ErrorCode.STORAGE_UNAVAILABLE,
        f"asset storage: {action} failed: {type(exc).__name__}: "
        + (str(exc).strip().splitlines() or [""])[0][:300],
    )


class S3Storage:
    """A bucket (and key prefix) on S3 or an S3-compatible server."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        s3: S3Settings,
        public_url: str,
        scratch: Path,
    ) -> None:
        try:
            import obstore
            from obstore.exceptions import NotFoundError
            from obstore.store import S3Store
        except ImportError as exc:  # pragma: no cover - the s3 extra is in the dev install
            raise ConfigError(
                "GENHOOK_STORAGE_URL: s3:// needs the s3 extra (pip install 'genhook[s3]')"
            ) from exc
        self._obstore: Any = obstore
        self._not_found: type[Exception] = NotFoundError
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.settings = s3
        self.mode = s3.mode
        self.public_url = public_url.rstrip("/")
        self.scratch = scratch
        config: dict[str, Any] = {
            "region": s3.region or "us-east-1",
            "checksum_algorithm": "sha256",
        }
        if s3.endpoint_url:
            config["endpoint"] = s3.endpoint_url
        if s3.access_key_id and s3.secret_access_key:
            config["access_key_id"] = s3.access_key_id
            config["secret_access_key"] = s3.secret_access_key
            if s3.session_token:
                config["session_token"] = s3.session_token
        allow_http = (s3.endpoint_url or "").startswith("http://")

        def client(timeout: float, retries: int, within: timedelta) -> Any:
            return S3Store(
                bucket,
                config=config,  # type: ignore[arg-type]
                client_options={
                    "allow_http": allow_http,
                    "connect_timeout": timedelta(seconds=min(5.0, timeout)),
                    "timeout": timedelta(seconds=timeout),
                },
                retry_config={
                    "max_retries": retries,
                    "retry_timeout": within,
                    "backoff": {
                        "init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=5),
                        "base": 2,
                    },
                },
            )

        self.store = client(120.0, MAX_RETRIES, RETRY_TIMEOUT)
        self._probe_client: Callable[[float], Any] = lambda timeout: client(
            timeout, 0, timedelta(seconds=timeout)
        )
        self._probes: dict[float, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        """The storage of ``s3://bucket/prefix`` with ``settings.s3``; attempts' scratch
        folders under ``GENHOOK_DATA_DIR/scratch``."""
        parts = urlsplit(settings.storage_url)
        return cls(
            parts.netloc,
            parts.path,
            settings.s3,
            settings.public_url,
            settings.data_dir / "scratch",
        )

    # -- keys and URLs ---------------------------------------------------------------------

    def key(self, job_id: str, name: str) -> str:
        """The object key of ``name`` (a filename, or ``.attempt-N/filename``) of a job."""
        return "/".join(p for p in (self.prefix, job_id, name) if p)

    def url(self, job_id: str, filename: str) -> str:
        """The ``asset_url`` of a job's published object, by the URL mode."""
        if self.mode == "redirect":
            return f"{self.public_url}/assets/{quote(job_id)}/{quote(filename)}"
        if self.mode == "public":
            return self.public_object_url(self.key(job_id, filename))
        return self.presign(self.key(job_id, filename))

    def presign(self, key: str) -> str:
        """A presigned GET URL of ``key``, valid for ``GENHOOK_S3_URL_EXPIRY``."""
        expiry = timedelta(seconds=int(self.settings.url_expiry))
        return str(self._obstore.sign(self.store, "GET", key, expiry))

    def fresh_urls(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of a completion ``payload`` whose outputs' presigned URLs (``asset_url``,
        ``poster_url``) are signed again now, for ``GENHOOK_S3_URL_EXPIRY`` from now, with
        their ``url_expires_at`` and ``poster_url_expires_at`` to match; other URLs, and any
        URL of another mode, are left as they are."""
        fresh = copy.deepcopy(dict(payload))
        job_id = str(fresh.get("job_id") or "")
        for output in fresh.get("outputs") or ():
            for url_field, expiry_field in (
                ("asset_url", "url_expires_at"),
                ("poster_url", "poster_url_expires_at"),
            ):
                url = output.get(url_field)
                if not isinstance(url, str) or url_expires_at(url) is None:
                    continue
                filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
                if not (_SAFE.match(job_id) and _SAFE.match(filename)):
                    continue
                signed = self.presign(self.key(job_id, filename))
                expires = url_expires_at(signed)
                output[url_field] = signed
                output[expiry_field] = None if expires is None else zulu(expires)
        return fresh

    def public_object_url(self, key: str) -> str:
        """``GENHOOK_S3_PUBLIC_URL/<key>``, or the bucket's own URL of ``key``."""
        path = quote(key)
        if self.settings.public_url:
            return f"{self.settings.public_url}/{path}"
        if self.settings.endpoint_url:
            return f"{self.settings.endpoint_url}/{self.bucket}/{path}"
        region = self.settings.region or "us-east-1"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{path}"

    def locate(self, job_id: str, filename: str) -> str | None:
        """Where ``/assets/<job_id>/<filename>`` redirects: a fresh URL of the object (a new
        presigned one unless the mode is public), or None when there is no such object."""
        if not (_SAFE.match(job_id) and _SAFE.match(filename)):
            return None
        key = self.key(job_id, filename)
        try:
            self._obstore.head(self.store, key)
        except (FileNotFoundError, self._not_found):
            return None
        except Exception as exc:
            raise storage_failure(f"HEAD {key}", exc) from exc
        if self.mode == "public":
            return self.public_object_url(key)
        return self.presign(key)

    # -- writing ---------------------------------------------------------------------------

    def probe(self, timeout: float) -> tuple[bool, str]:
        """The bucket answers a one-key listing under the prefix within ``timeout`` seconds,
        tried once (the transfers' retries would hold ``/readyz`` for a minute)."""
        store = self._probes.get(timeout)
        if store is None:
            store = self._probes[timeout] = self._probe_client(timeout)
        try:
            pages = self._obstore.list(
                store, f"{self.prefix}/" if self.prefix else None, chunk_size=1
            )
            next(iter(pages), None)
        except Exception as exc:
            return False, storage_failure("listing the bucket", exc).description
        return True, "S3 bucket answering"

    def put(self, job_id: str, asset: Asset) -> str:
        """Upload a published object; return its ``asset_url``."""
        _check_name(job_id, asset.filename)
        self.upload(self.key(job_id, asset.filename), asset)
        return self.url(job_id, asset.filename)

    def upload(self, key: str, asset: Asset) -> None:
        """Upload ``asset``'s bytes to ``key`` with its Content-Type and Cache-Control
        (multipart above :data:`PART_BYTES`)."""
        try:
            self._obstore.put(
                self.store,
                key,
                asset.data,
                attributes={
                    "Content-Type": media_type(asset.filename),
                    "Cache-Control": CACHE_CONTROL,
                },
                use_multipart=len(asset.data) > PART_BYTES,
                chunk_size=PART_BYTES,
                max_concurrency=PARTS_IN_FLIGHT,
            )
        except Exception as exc:
            raise storage_failure(f"upload of {key}", exc) from exc

    def attempt(self, job_id: str, number: int) -> S3Attempt:
        """The staging area of attempt ``number`` of a job."""
        return S3Attempt(self, job_id, number)

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder: ``.../``)."""
        found: list[str] = []
        try:
            for page in self._obstore.list(self.store, prefix, chunk_size=DELETE_BATCH):
                found.extend(str(meta["path"]) for meta in page)
        except Exception as exc:
            raise storage_failure(f"listing {prefix}", exc) from exc
        return found

    def delete(self, keys: list[str]) -> None:
        """Delete ``keys``, :data:`DELETE_BATCH` a request (a missing key is no error)."""
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            try:
                self._obstore.delete(self.store, batch)
            except Exception as exc:
                raise storage_failure(f"deleting {len(batch)} objects", exc) from exc

    def delete_job(self, job_id: str) -> None:
        """Delete every object of a job, published and staged (a purge); a second call, or a
        job that never stored anything, does nothing."""
        if not _SAFE.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        self.delete(self.keys(self.key(job_id, "") + "/"))
        shutil.rmtree(self.scratch / job_id, ignore_errors=True)


class S3Attempt:
    """One attempt's objects, staged under ``.attempt-<n>/`` until the lease holder's
    finishing transaction publishes them (``publish``) or the attempt ends (``discard``).

    ``folder`` is the attempt's local scratch folder (its generations' work files), removed
    by ``discard``."""

    def __init__(self, storage: S3Storage, job_id: str, number: int) -> None:
        self.storage = storage
        self.job_id = job_id
        self.number = number
        self.staging = f".attempt-{number}"
        self.folder = storage.scratch / job_id / self.staging
        self.staged: list[str] = []

    def put(self, job_id: str, asset: Asset) -> str:
        """Stage ``asset``; return the ``asset_url`` it will have once published."""
        if job_id != self.job_id:
            raise ValueError(f"attempt assets of {self.job_id} cannot hold {job_id}'s files")
        _check_name(job_id, asset.filename)
        private_dir(self.storage.scratch)
        self.storage.upload(self.storage.key(job_id, f"{self.staging}/{asset.filename}"), asset)
        self.staged.append(asset.filename)
        return self.storage.url(job_id, asset.filename)

    def publish(self) -> None:
        """Copy every staged object to its published key (each copy atomic, server-side,
        metadata kept), then delete the staged keys. Runs inside the finishing transaction:
        a failure raises ``storage_unavailable`` and the transaction rolls back."""
        storage = self.storage
        staged = [storage.key(self.job_id, f"{self.staging}/{name}") for name in self.staged]
        for name, source in zip(self.staged, staged, strict=True):
            target = storage.key(self.job_id, name)
            try:
                storage._obstore.copy(storage.store, source, target)
            except Exception as exc:
                raise storage_failure(f"publishing {target}", exc) from exc
        self.staged.clear()
        try:
            storage.delete(staged)
        except GenhookError as exc:  # the objects are live; discard (or a purge) tidies up
            log.warning("%s: staged objects of %s kept: %s", storage.bucket, self.job_id, exc)

    def discard(self) -> None:
        """Delete what this attempt staged and did not publish, and whatever earlier attempts
        of the job left staged (their workers are gone: their results are never recorded);
        a later attempt's staging (a lease holder's) is left alone."""
        shutil.rmtree(self.folder, ignore_errors=True)
        storage = self.storage
        job_prefix = storage.key(self.job_id, "") + "/"
        try:
            leftovers = []
            for key in storage.keys(job_prefix):
                match = _ATTEMPT.match(key[len(job_prefix) :])
                if match and int(match.group(1)) <= self.number:
                    leftovers.append(key)
            storage.delete(leftovers)
        except GenhookError as exc:  # never raised past the attempt: a purge removes them
            log.warning("%s: staged objects of %s kept: %s", storage.bucket, self.job_id, exc)
        self.staged.clear()


def url_refresher(storage: Any) -> Callable[[Mapping[str, Any]], dict[str, Any]] | None:
    """What signs a payload's presigned URLs again (:meth:`S3Storage.fresh_urls`) where the
    storage makes presigned URLs; None for any other storage (its URLs do not expire)."""
    if isinstance(storage, S3Storage) and storage.mode == "presigned":
        return storage.fresh_urls
    return None


def _check_name(job_id: str, filename: str) -> None:
    if not (_SAFE.match(job_id) and _SAFE.match(filename)):
        raise ValueError(f"not a safe asset name: {job_id!r}/{filename!r}")
