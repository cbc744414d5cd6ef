"""The syntax check of a ``callback_url``: an absolute http(s) URL with a host."""

from __future__ import annotations

from urllib.parse import urlsplit

from genhook.errors import ErrorCode, InvalidInput

MAX_URL_LENGTH = 2048


def check_callback_url(url: object) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host; else invalid input."""

    def bad(why: str) -> InvalidInput:
        return InvalidInput(ErrorCode.INVALID_CALLBACK_URL, why, field="callback_url")

    if not isinstance(url, str):
        raise bad("callback_url must be a string")
    if len(url) > MAX_URL_LENGTH:
        raise bad(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise bad("callback_url contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise bad(f"callback_url is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise bad("callback_url must use http or https")
    if not parts.hostname:
        raise bad("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise bad("callback_url must not carry credentials")
    if port == 0:
        raise bad("callback_url has port 0")
    return url
