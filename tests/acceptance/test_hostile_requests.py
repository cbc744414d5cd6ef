"""Acceptance: hostile requests by hand on a real `genhook serve` (SQLite and PostgreSQL). Every
operation of its OpenAPI document gets malformed JSON, invalid UTF-8, the wrong JSON type,
wrong content types, an empty body and unknown path parameters: never a 5xx, and every 4xx
carries an ``error_code``. ``/assets/`` refuses path traversal in every spelling without
serving a byte of anything outside a job's folder. A body over the limit is 413, a huge string
inside the limit is the field's own 422. The server then still takes a clean trigger."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import Genhook

PRODUCT = {
    "product_id": "SKU-9",
    "product_name": "Oak Stool",
    "target_style": "minimal",
    "target_platform": "x_post",
}
BODIES: dict[str, tuple[bytes, str | None]] = {
    "truncated JSON": (b'{"product_id": "A", "product_name": ', "application/json"),
    "invalid UTF-8": (b'{"product_id": "\xff\xfe\xc0\xaf"}', "application/json"),
    "overlong UTF-8 slash": (b'{"product_id": "\xc0\xaf"}', "application/json"),
    "a JSON array": (b"[1, 2, 3]", "application/json"),
    "a JSON string": (b'"hello"', "application/json"),
    "a JSON number": (b"12", "application/json"),
    "null": (b"null", "application/json"),
    "empty": (b"", "application/json"),
    "text/plain": (b'{"product_id": "A"}', "text/plain"),
    "form-encoded": (b"product_id=A&product_name=B", "application/x-www-form-urlencoded"),
    "multipart": (
        b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--x--\r\n',
        "multipart/form-data; boundary=x",
    ),
    "no content type": (b'{"product_id": "A"}', None),
    "BOM first": (b'\xef\xbb\xbf{"product_id": "A"}', "application/json"),
    "XML": (b"<?xml version='1.0'?><a/>", "application/xml"),
}
TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "..%5c..%5c..%5cetc%5cpasswd",
    "..\\..\\..\\etc\\passwd",
    "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "%e2%80%a5/etc/passwd",
    "job_x/..%00/passwd",
    "job_x/%00",
    "job_x/a%00.jpg",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "job_x/.",
    "job_x/..",
    "job_x//../../etc/passwd",
    ".%2e/.%2e/etc/passwd",
    "job_x/" + "a" * 5000,
]


@pytest.fixture
def server(genhook_factory: Any) -> Iterator[Genhook]:
    g = genhook_factory(GENHOOK_ADMIN_KEY="gh-admin-hostile-requests-0123456789")
    g.serve(workers=0)
    yield g


def _operations(g: Genhook) -> list[tuple[str, str]]:
    """Every (method, path) of the server's OpenAPI document, path parameters filled with ids
    that name nothing."""
    document = httpx.get(f"{g.base}/openapi.json", timeout=30).json()
    found = []
    for path, item in document["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                concrete = path
                for name in ("workflow_id", "job_id", "delivery_id", "batch_id", "service"):
                    concrete = concrete.replace("{" + name + "}", f"no-such-{name}")
                concrete = concrete.replace("{path}", "x").replace("{", "").replace("}", "")
                found.append((method.upper(), concrete))
    assert len(found) >= 15, found
    return found


def _check(answer: httpx.Response, what: str) -> None:
    assert answer.status_code < 500, (what, answer.status_code, answer.text[:300])
    if answer.status_code >= 400 and answer.headers.get("content-type", "").startswith(
        "application/json"
    ):
        body = answer.json()
        assert isinstance(body, dict) and body.get("error_code"), (what, body)


def test_every_operation_answers_hostile_bodies_without_a_5xx(server: Genhook) -> None:
    g = server
    operator = {"Authorization": "Bearer gh-admin-hostile-requests-0123456789"}
    operations = _operations(g)
    for method, path in operations:
        auth = operator if "/ops/" in path else {"Authorization": f"Bearer {g.key}"}
        if path.startswith("/v1/workflows/no-such-workflow_id"):  # a real workflow, too
            paths = [path, path.replace("no-such-workflow_id", "product-image")]
        else:
            paths = [path]
        for concrete in paths:
            for name, (raw, kind) in BODIES.items():
                if method == "GET" and name not in ("empty", "truncated JSON"):
                    continue
                headers = {**auth, **({"content-type": kind} if kind else {})}
                answer = httpx.request(
                    method, f"{g.base}{concrete}", content=raw, headers=headers, timeout=30
                )
                _check(answer, f"{method} {concrete} with {name}")
            for query in ("?limit=-1", "?cursor=%00%ff", "?status=%ff", "?window=" + "9" * 400):
                answer = httpx.request(
                    method, f"{g.base}{concrete}{query}", headers=auth, timeout=30
                )
                _check(answer, f"{method} {concrete}{query}")
    assert g.trigger("product-image", PRODUCT).status_code == 202


def test_assets_refuse_path_traversal_in_every_spelling(server: Genhook) -> None:
    g = server
    secret_file = "root:x:0:0"  # the first line of /etc/passwd
    database = (g.tmp / "var" / "genhook.db").exists()
    for spelling in TRAVERSALS:
        with httpx.Client(base_url=g.base, timeout=30) as client:
            request = client.build_request("GET", "/assets/x")
            request.url = httpx.URL(f"{g.base}/assets/{spelling}")  # sent as written
            answer = client.send(request)
        assert answer.status_code in (400, 404, 414), (spelling, answer.status_code)
        assert secret_file not in answer.text, spelling
        assert b"SQLite format" not in answer.content, spelling
        _check(answer, spelling)
    if database:
        for spelling in ("..%2fgenhook.db", "../genhook.db", "%2e%2e/genhook.db"):
            answer = httpx.get(f"{g.base}/assets/job_x/{spelling}")
            assert b"SQLite format" not in answer.content, spelling


def test_size_limits_answer_with_their_own_codes(server: Genhook) -> None:
    g = server
    over = b'{"product_id": "' + b"a" * (300 * 1024) + b'"}'
    answer = g.http.post(
        "/v1/workflows/product-image/runs",
        content=over,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 413 and answer.json()["error_code"] == "payload_too_large"
    huge_field = {**PRODUCT, "product_name": "n" * 200_000}
    answer = g.trigger("product-image", huge_field)
    assert answer.status_code == 422 and answer.json()["field"] == "product_name", answer.text
    assert g.trigger("product-image", PRODUCT).status_code == 202
