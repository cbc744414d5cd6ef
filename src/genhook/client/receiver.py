"""Receiving genhook's callbacks: verify the Standard Webhooks signature, then parse the body
into typed objects.

::

    receiver = Receiver(["whsec_new...", "whsec_old..."])   # one secret, or several
    event = receiver.parse(body_bytes, request_headers)      # WebhookVerificationError if forged
    if isinstance(event, CompletionPayload) and event.succeeded: ...

A delivery is genuine when its ``webhook-signature`` header holds a ``v1`` signature of
``"{webhook-id}.{webhook-timestamp}.{body}"`` made with one of the secrets, and its
``webhook-timestamp`` is within ``tolerance`` seconds of now (five minutes by default, the
specification's figure; an old delivery replayed by someone else is refused). During a secret
rotation (``genhook services rotate-secret NAME --overlap 24h``) genhook signs with both secrets,
so a receiver configured with the old secret, the new one, or both verifies; give it both while
you move, then only the new one.

Each signature is computed by the ``standardwebhooks`` library (the specification's reference
implementation, already one of genhook's dependencies); what is added here is what its own
``verify`` lacks: several secrets, a tolerance and clock of the caller's choosing, and a
malformed header refused as :class:`WebhookVerificationError` (never ``ValueError``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from genhook.client.models import (
    BatchEvent,
    CompletionPayload,
    JobStatusEvent,
    OperatorEvent,
    UnknownEvent,
)

DEFAULT_TOLERANCE = 300.0
"""Seconds a delivery's timestamp may be away from now (the specification's five minutes)."""

WebhookEvent = CompletionPayload | JobStatusEvent | BatchEvent | OperatorEvent | UnknownEvent
"""What :meth:`Receiver.parse` returns: the completion payload (``job.completed``,
``job.failed``), a job's other events (``job.started``, ``job.progress``), a batch's callback,
an operator event, or (from a newer genhook) an event this version does not know."""

COMPLETION_EVENTS = ("job.completed", "job.failed")


class WebhookVerificationError(Exception):
    """The delivery is not genuine (or no longer fresh): answer it 400 or 401, act on nothing."""


class WebhookPayloadError(ValueError):
    """A genuine delivery whose JSON does not have the shape its ``event`` promises."""


def _signatures(header: str) -> list[bytes]:
    """The ``v1`` signatures in a ``webhook-signature`` header (space-separated entries)."""
    found = []
    for entry in header.split():
        version, _, value = entry.partition(",")
        if version != "v1" or not value:
            continue
        try:
            found.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


class Receiver:
    """Verifies and parses genhook's deliveries for one or more ``whsec_`` secrets."""

    def __init__(
        self,
        secrets: str | Sequence[str],
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        given = [secrets] if isinstance(secrets, str) else list(secrets)
        if not given:
            raise ValueError("a Receiver needs at least one webhook secret")
        self._signers = [Webhook(secret) for secret in given]
        self.tolerance = tolerance
        self.clock = clock

    def verify(self, body: bytes | str, headers: Mapping[str, str]) -> Any:
        """The delivery's JSON, once its signature and timestamp are checked;
        :class:`WebhookVerificationError` otherwise."""
        lower = {k.lower(): v for k, v in headers.items()}
        msg_id = lower.get("webhook-id")
        stamp = lower.get("webhook-timestamp")
        header = lower.get("webhook-signature")
        if not (msg_id and stamp and header):
            raise WebhookVerificationError("missing webhook-id, webhook-timestamp or signature")
        try:
            seconds = int(stamp)
        except ValueError:
            raise WebhookVerificationError("webhook-timestamp is not Unix seconds") from None
        if abs(self.clock() - seconds) > self.tolerance:
            raise WebhookVerificationError(
                f"webhook-timestamp is more than {self.tolerance:g}s away from now"
            )
        try:
            text = body if isinstance(body, str) else body.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookVerificationError("the body is not UTF-8") from None
        given = _signatures(header)
        when = datetime.fromtimestamp(seconds, UTC)
        for signer in self._signers:
            expected = base64.b64decode(signer.sign(msg_id, when, text).partition(",")[2])
            if any(hmac.compare_digest(expected, sig) for sig in given):
                try:
                    return json.loads(text)
                except ValueError:
                    raise WebhookVerificationError("the body is not JSON") from None
        raise WebhookVerificationError("no signature matches any of the secrets")

    def parse(self, body: bytes | str, headers: Mapping[str, str]) -> WebhookEvent:
        """The verified delivery as a typed object (see :data:`WebhookEvent`)."""
        return parse_event(self.verify(body, headers))


def parse_event(data: Any) -> WebhookEvent:
    """A delivery's JSON (already verified) as a typed object, by its ``event``."""
    if not isinstance(data, dict):
        raise WebhookPayloadError("a genhook delivery is a JSON object")
    event = data.get("event")
    try:
        if event in COMPLETION_EVENTS:
            return CompletionPayload.model_validate(data)
        if isinstance(event, str) and event.startswith("job."):
            return JobStatusEvent.model_validate(data)
        if (isinstance(event, str) and event.startswith("batch.")) or "batch_id" in data:
            return BatchEvent.model_validate({"event": "batch.completed", **data})
        if "details" in data and "service" in data:
            return OperatorEvent.model_validate(data)
    except ValidationError as exc:
        raise WebhookPayloadError(f"a {event} delivery of an unexpected shape: {exc}") from exc
    return UnknownEvent.model_validate(data)


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secrets: str | Sequence[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> WebhookEvent:
    """One-off :meth:`Receiver.parse`: verify ``body`` with ``secrets`` and parse it."""
    return Receiver(secrets, tolerance=tolerance).parse(body, headers)
