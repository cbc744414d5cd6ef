"""Standard Webhooks signing of callback deliveries.

A secret is ``whsec_`` followed by the base64 of random key bytes. A delivery carries three
headers: ``webhook-id`` (the message id, stable across retries of the same message),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``::

    v1,<base64 of HMAC-SHA256(key, f"{msg_id}.{timestamp}.".encode() + body)>

where ``key`` is the base64-decoded part of the secret after ``whsec_``. A receiver verifies with
any Standard Webhooks library (https://www.standardwebhooks.com/).

While a rotated secret's overlap lasts, ``webhook-signature`` carries one signature per secret,
the new one first, separated by a space (``v1,<new> v1,<old>``), as the specification allows:
a receiver that still has the old secret and one that has the new one both verify.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
USER_AGENT = "genhook-webhooks/1"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


@functools.lru_cache(maxsize=1024)
def secret_key(secret: str) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; ``ValueError`` if it is not one.

    Remembered per secret string (a service's deliveries are all signed with the same one or
    two): decoding it again for every request was 8% of a delivery's CPU. A secret that is not
    one raises every time (nothing is remembered for it)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


@functools.lru_cache(maxsize=1024)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed by ``secret`` and fed nothing yet: each signature starts from a
    copy of it, so the key is set up once per secret, not per request."""
    return hmac.new(secret_key(secret), digestmod=hashlib.sha256)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`` keyed by the secret.

    Fed by ``update`` on a copy of the keyed state: OpenSSL's one-shot ``hmac.digest`` lets the
    GIL go on every call, which on the outbox's event loop handed it to the store's turn in the
    middle of each request; ``update`` keeps it for bodies under 2 KiB (the most of them)."""
    mac = _keyed(secret).copy()
    mac.update(f"{msg_id}.{int(timestamp)}.".encode())
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def headers(
    secret: str, msg_id: str, timestamp: int, body: bytes, also: Sequence[str] = ()
) -> dict[str, str]:
    """The HTTP headers of one signed delivery attempt of ``body``; each secret in ``also``
    (a rotated secret during its overlap) adds its signature after the one of ``secret``."""
    signatures = [sign(s, msg_id, timestamp, body) for s in (secret, *also)]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
