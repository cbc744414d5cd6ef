"""Serving asset bytes the way HTTP caches and media players expect.

Starlette's ``FileResponse`` already answers ``HEAD`` and ``Range`` (206, several ranges as
multipart); genhook adds what it knows better than the file system:

- ``ETag`` is the file's SHA-256, the very ``sha256`` of the completion payload, so a receiver
  can check a download against the payload, and a cache keeps it for as long as the bytes are
  the same (computed once per file version, then remembered);
- ``If-None-Match`` with that tag answers ``304 Not Modified`` without a body;
- a ``Range`` that starts past the end answers ``416`` in genhook's JSON error shape (with
  ``Content-Range: bytes */SIZE``), and one that genhook does not understand (another unit,
  bad syntax) is ignored and the whole file sent, as RFC 9110 (section 14.2) asks.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from fastapi.responses import FileResponse, Response
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from genhook.api.errors import error_response
from genhook.errors import ErrorCode, GenhookError
from genhook.storage import media_type

CACHE_CONTROL = "public, max-age=31536000, immutable"
"""An asset's bytes never change under its URL (a new job gets new URLs)."""


@lru_cache(maxsize=4096)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    """The hex SHA-256 of one version of a file (the version is part of the cache key)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def etag_matches(if_none_match: str, etag: str) -> bool:
    """``If-None-Match`` (a list of tags, weak or strong, or ``*``) names ``etag``: weak
    comparison, as RFC 9110 (section 13.1.2) prescribes for this header."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


class _Unsatisfiable(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


class AssetFile(FileResponse):
    """``FileResponse`` with genhook's answers to a bad ``Range`` (see the module docstring)."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # no ranges: the whole file, 200
        except RangeNotSatisfiable as exc:
            raise _Unsatisfiable(exc.max_size) from exc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except _Unsatisfiable as exc:  # raised before anything was sent
            response = error_response(
                GenhookError(
                    ErrorCode.RANGE_NOT_SATISFIABLE,
                    f"the range starts past the end of the file ({exc.size} bytes)",
                )
            )
            response.headers["Content-Range"] = f"bytes */{exc.size}"
            await response(scope, receive, send)


def asset_response(path: Path, filename: str, if_none_match: str | None) -> Response:
    """The answer for the file at ``path``: its bytes (or a range of them), or 304."""
    stat = os.stat(path)
    etag = f'"{_sha256(str(path), stat.st_mtime_ns, stat.st_size)}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if if_none_match is not None and etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return AssetFile(path, media_type=media_type(filename), headers=headers, stat_result=stat)
