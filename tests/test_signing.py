"""Standard Webhooks signing, checked against the independent ``standardwebhooks`` library."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from genhook.delivery import signing

BODY = json.dumps(
    {"job_id": "job_1", "status": "success", "caption": "Leinen \u2013 hell, gr\u00fcn"},
    ensure_ascii=False,
).encode()


def test_new_secret_is_whsec_base64_of_enough_random_bytes() -> None:
    """A new secret is "whsec_" + base64 of 24 to 32 bytes, and no two are alike."""
    secrets = {signing.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        assert 24 <= len(key) <= 32


def test_signature_matches_the_specification_example() -> None:
    """The signature of the Standard Webhooks specification's published example is reproduced."""
    sig = signing.sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_equals_the_reference_library_signature() -> None:
    """sign() gives the same v1 signature as standardwebhooks' own Webhook.sign."""
    secret = signing.new_secret()
    ts = 1_764_331_200
    expected = Webhook(secret).sign("msg_abc", datetime.fromtimestamp(ts, tz=UTC), BODY.decode())
    assert signing.sign(secret, "msg_abc", ts, BODY) == expected


def test_headers_verify_with_the_reference_library() -> None:
    """The headers of a fresh attempt verify with standardwebhooks and give back the payload."""
    secret = signing.new_secret()
    hdrs = signing.headers(secret, "msg_42", int(time.time()), BODY)
    assert Webhook(secret).verify(BODY, hdrs) == json.loads(BODY)
    assert hdrs["webhook-id"] == "msg_42"
    assert hdrs["content-type"] == "application/json"
    assert hdrs["user-agent"] == "genhook-webhooks/1"
    assert hdrs["webhook-signature"].startswith("v1,")


def test_tampered_body_fails_verification() -> None:
    """Changing one byte of the body makes the signature fail to verify."""
    secret = signing.new_secret()
    hdrs = signing.headers(secret, "msg_42", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"job_1", b"job_2"), hdrs)


def test_tampered_timestamp_fails_verification() -> None:
    """Changing the timestamp header (still within tolerance) makes the signature fail."""
    secret = signing.new_secret()
    now = int(time.time())
    hdrs = signing.headers(secret, "msg_42", now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**hdrs, "webhook-timestamp": str(now - 1)})


def test_tampered_id_or_other_secret_fails_verification() -> None:
    """A different message id, or a different secret, does not verify."""
    secret = signing.new_secret()
    hdrs = signing.headers(secret, "msg_42", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**hdrs, "webhook-id": "msg_43"})
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(BODY, hdrs)


def test_same_message_signs_identically_and_new_timestamp_changes_signature() -> None:
    """Signing is deterministic; a retry with a new timestamp gets a new signature."""
    secret = signing.new_secret()
    assert signing.sign(secret, "msg_1", 100, BODY) == signing.sign(secret, "msg_1", 100, BODY)
    assert signing.sign(secret, "msg_1", 100, BODY) != signing.sign(secret, "msg_1", 101, BODY)


@pytest.mark.parametrize("secret", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_@@@@"])
def test_malformed_secret_is_refused(secret: str) -> None:
    """A secret without the whsec_ prefix, empty, or not base64 raises ValueError."""
    with pytest.raises(ValueError):
        signing.sign(secret, "msg_1", 100, BODY)
