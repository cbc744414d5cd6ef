"""A schedule's items: read from a CSV or JSONL file (relative to the workflows dir) or URL.

A URL is fetched through genhook's guarded fetcher (:class:`genhook.media.fetch.MediaFetcher`'s
download: every hop's URL checked against the callback policy, ``GENHOOK_ALLOW_PRIVATE_CALLBACKS``,
host names resolved through the :class:`~genhook.delivery.ssrf.GuardedResolver`, at most 3
redirects, the body cut off past :data:`MAX_BYTES`, the whole fetch bounded in time); only
its content types differ: text (``text/csv``, ``text/plain``, ``application/jsonl``,
``application/x-ndjson``, ``application/json``).

CSV: the first row names the fields; an empty cell is an absent field; a cell of a field whose
input schema type is integer, number, boolean, array or object is read as JSON (``12``,
``true``, ``["a"]``), the others stay text. JSONL: one JSON object per non-empty line. Each
item is a trigger body (input fields and, optionally, envelope fields such as
``callback_url``).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import aiohttp
from yarl import URL

from genhook.errors import GenhookError
from genhook.media.fetch import MediaFetcher, _content_type
from genhook.scheduling.spec import ItemsSource

MAX_ITEMS = 10_000
"""The most items one fire takes (a longer file fails the fire: split it)."""
MAX_BYTES = 16 * 1024 * 1024
"""The largest items file or URL body."""
FETCH_TIMEOUT = 30.0
TEXT_TYPES = (
    "text/csv",
    "text/plain",
    "application/csv",
    "application/jsonl",
    "application/x-ndjson",
    "application/x-jsonlines",
    "application/json",
)
FIELD = "items.url"


class ItemsUnreadable(Exception):
    """The items could not be read or parsed; the message says why (no secrets, no query)."""


class ItemsFetcher(MediaFetcher):
    """The media fetcher's guarded download, for a text body instead of an image."""

    async def _get(self, url: str, field: str) -> tuple[str, bytes] | str:
        self.requests += 1
        async with self._client().get(
            URL(url, encoded=False),
            allow_redirects=False,
            headers={"Accept": ", ".join(TEXT_TYPES)},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(10.0, self.timeout)),
        ) as response:
            if response.status in (301, 302, 303, 307, 308):
                location = response.headers.get("Location")
                if not location:
                    raise ItemsUnreadable(f"HTTP {response.status} without a Location")
                return str(response.url.join(URL(location)))
            if response.status != 200:
                raise ItemsUnreadable(f"the server answered HTTP {response.status}")
            ctype = _content_type(response.headers.get("Content-Type")) or "text/plain"
            if ctype not in TEXT_TYPES:
                raise ItemsUnreadable(f"content type {ctype[:60]!r} is not CSV or JSONL text")
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > self.max_bytes:
                    response.close()
                    raise ItemsUnreadable(f"the body is over {self.max_bytes} bytes")
            return ctype, bytes(body)

    def text(self, url: str) -> str:
        """The body at ``url`` as UTF-8 text."""
        try:
            _ctype, data = self._run(
                self._download(url, FIELD, self.timeout), self.timeout + 5.0, lambda: False
            )
        except GenhookError as exc:
            raise ItemsUnreadable(exc.description) from None
        except TimeoutError:
            raise ItemsUnreadable(f"no complete answer within {self.timeout:g}s") from None
        return _decode(data)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ItemsUnreadable(f"not UTF-8 text (byte {exc.start})") from None


def read_items(
    source: ItemsSource, schema: dict[str, Any], fetcher: ItemsFetcher | None
) -> list[Any]:
    """The items of ``source`` (each a trigger body), or :class:`ItemsUnreadable`."""
    if source.url is not None:
        if fetcher is None:
            raise ItemsUnreadable("no fetcher for items by URL")
        text = fetcher.text(source.url)
    else:
        path = source.path
        try:
            if path.stat().st_size > MAX_BYTES:
                raise ItemsUnreadable(f"{source.file} is over {MAX_BYTES} bytes")
            text = _decode(path.read_bytes())
        except OSError as exc:
            raise ItemsUnreadable(f"cannot read {source.file}: {exc.strerror or exc}") from None
    items = parse_jsonl(text) if source.format == "jsonl" else parse_csv(text, schema)
    if len(items) > MAX_ITEMS:
        raise ItemsUnreadable(f"{len(items)} items, over the limit of {MAX_ITEMS} a fire")
    return items


def parse_jsonl(text: str) -> list[Any]:
    """One JSON value per non-empty line (an object is a trigger; anything else is refused as
    that item's ``invalid_body`` when it is checked)."""
    items: list[Any] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ItemsUnreadable(f"line {number} is not JSON: {exc.msg}") from None
    return items


_TYPED = {"integer", "number", "boolean", "array", "object"}


def parse_csv(text: str, schema: dict[str, Any]) -> list[dict[str, Any]]:
    """One trigger per row after the header; cells typed by the input schema (see module)."""
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise ItemsUnreadable(f"not CSV: {exc}") from None
    if not rows:
        return []
    header = [name.strip() for name in rows[0]]
    if not all(header) or len(set(header)) != len(header):
        raise ItemsUnreadable("the CSV header must name each column once")
    props = schema.get("properties", {})
    items: list[dict[str, Any]] = []
    for number, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            raise ItemsUnreadable(f"row {number} has more cells than the header")
        item: dict[str, Any] = {}
        for name, cell in zip(header, row, strict=False):
            if cell == "":
                continue
            kind = props.get(name, {}).get("type") if isinstance(props.get(name), dict) else None
            item[name] = _typed(cell) if kind in _TYPED else cell
        items.append(item)
    return items


def _typed(cell: str) -> Any:
    """A cell read as JSON (left as text when it is not JSON: the schema then refuses it)."""
    try:
        return json.loads(cell)
    except json.JSONDecodeError:
        return cell


__all__ = [
    "MAX_BYTES",
    "MAX_ITEMS",
    "ItemsFetcher",
    "ItemsUnreadable",
    "parse_csv",
    "parse_jsonl",
    "read_items",
]
