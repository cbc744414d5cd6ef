"""The review queue in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright against a real ``genhook serve``, SQLite and PostgreSQL, with a real receiver that
checks every callback's signature.

Two jobs of a workflow whose QC can never pass (``on_fail: review``) are held. The operator logs
in through the form, sees each held job on ``/dashboard/reviews`` with its image (loaded), its
QC figures, its prompt and its text; rejects one with a note (it is generated again, and shows up
again in round 2 with the note in its prompt, then is approved as it is), and approves the other
with an edited alt text and caption: each approval leads to exactly one callback, carrying the
edits (or the original text), and a ``quality_warning`` that still says what failed. A form
without its CSRF token is refused. Screenshots go to ``test-artifacts/review/`` (git-ignored).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import httpx

from genhook.review import APPROVED_LEAD
from tests.acceptance.harness import ROOT, Genhook, Receiver, verify
from tests.acceptance.test_dashboard_browser import browser  # noqa: F401  (the fixture)
from tests.acceptance.test_review import ADMIN, held, reviewing

ARTIFACTS = ROOT / "test-artifacts" / "review"


def test_review_queue_in_chromium(
    browser: Any,  # noqa: F811
    genhook_factory: Callable[..., Genhook],
    receiver: Receiver,
) -> None:
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    g = reviewing(genhook_factory)
    g.serve(workers=1)
    approve_id = g.trigger("review-tiny", {"item_id": "SHIRT-1", "callback_url": receiver.url})
    reject_id = g.trigger("review-tiny", {"item_id": "MUG-2", "callback_url": receiver.url})
    approve, reject = approve_id.json()["job_id"], reject_id.json()["job_id"]
    first = held(g, approve, 1)
    held(g, reject, 1)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{g.base}/dashboard/reviews")
    assert page.url.endswith("/dashboard/login")
    page.fill("#key", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{g.base}/dashboard")
    page.click("text=Reviews")
    page.wait_for_url("**/dashboard/reviews*")

    # each held job with its image, QC figures, prompt and text
    card = page.locator(f'article[data-job="{approve}"]')
    assert card.count() == 1 and page.locator(f'article[data-job="{reject}"]').count() == 1
    image = card.locator("img").first
    image.wait_for()
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", image.element_handle())
    assert image.get_attribute("src") == first["outputs"][0]["asset_url"]
    row = card.locator('tr[data-check="contrast"]')
    assert row.locator('[data-figure="threshold"]').inner_text() == ">= 100000.0"
    measured = row.locator('[data-figure="measured"]').inner_text()
    [check] = [c for c in first["quality_warning"]["failed_checks"] if c["check"] == "contrast"]
    assert float(measured) == check["measured"]
    prompt = card.locator('[data-figure="prompt_used"]').inner_text()
    assert prompt == first["metadata"]["prompt_used"]
    assert card.locator('[data-figure="round"]').inner_text() == "round 1"
    assert card.locator("textarea[name=alt_text]").input_value() == "item SHIRT-1"
    assert card.locator("textarea[name=caption]").input_value() == "item SHIRT-1 caption"
    page.screenshot(path=str(ARTIFACTS / "reviews.png"), full_page=True)

    # a form without the session's CSRF token is refused, nothing changes
    token = card.locator("form.approve input[name=csrf]").get_attribute("value")
    assert token
    forged = page.request.post(
        f"{g.base}/dashboard/jobs/{approve}/review", form={"decision": "approve"}
    )
    assert forged.status == 403
    assert g.job(approve)["status"] == "awaiting_review"

    # reject with a note: generated again, shown in round 2 with the note in its prompt
    note = "a plain grey background, the handle on the right"
    other = page.locator(f'article[data-job="{reject}"]')
    other.locator("textarea[name=note]").fill(note)
    other.locator('[data-action="reject"]').click()
    page.wait_for_url("**/dashboard/reviews?done=*&decision=reject")
    assert "generates again with your note" in page.inner_text(".notice")
    held(g, reject, 2)
    page.goto(f"{g.base}/dashboard/reviews")
    other = page.locator(f'article[data-job="{reject}"]')
    assert other.locator('[data-figure="round"]').inner_text() == "round 2"
    assert note in other.locator('[data-figure="prompt_used"]').inner_text()
    history = other.locator('.history li[data-round="1"]').inner_text()
    assert "reject by operator" in history and note in history
    assert receiver.for_job(reject) == []
    page.screenshot(path=str(ARTIFACTS / "reviews-round-2.png"), full_page=True)

    # approve with edited alt text and caption: one callback with the edits
    alt, caption = "A white linen shirt on a hanger", "Linen, cut by hand: approved by ops"
    card = page.locator(f'article[data-job="{approve}"]')
    card.locator("textarea[name=alt_text]").fill(alt)
    card.locator("textarea[name=caption]").fill(caption)
    card.locator('[data-action="approve"]').click()
    page.wait_for_url("**/dashboard/reviews?done=*&decision=approve")
    assert "payload is on its way" in page.inner_text(".notice")
    assert page.locator(f'article[data-job="{approve}"]').count() == 0
    [call] = receiver.wait_job(approve)
    payload = verify(g.secret, call)
    assert payload["status"] == "success" and payload["event"] == "job.completed"
    assert [o["alt_text"] for o in payload["outputs"]] == [alt]
    assert [o["caption"] for o in payload["outputs"]] == [caption]
    assert payload["seo"]["alt_text"] == alt and payload["seo"]["caption"] == caption
    assert payload["quality_warning"]["message"].startswith(APPROVED_LEAD)
    assert [c["check"] for c in payload["quality_warning"]["failed_checks"]] == [
        c["check"] for c in first["quality_warning"]["failed_checks"]
    ]

    # approve the regenerated one as it is: its callback has the note's prompt, the text as made
    page.locator(f'article[data-job="{reject}"] [data-action="approve"]').click()
    page.wait_for_url("**/dashboard/reviews?done=*&decision=approve")
    [call] = receiver.wait_job(reject)
    payload = verify(g.secret, call)
    assert note in payload["metadata"]["prompt_used"]
    assert [o["alt_text"] for o in payload["outputs"]] == ["item MUG-2"]
    assert "No job is waiting for review." in page.inner_text("main")

    # readable on a phone, nothing wider than the screen
    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        extra_http_headers={"Authorization": f"Bearer {ADMIN}"},
    )
    third = g.trigger("review-tiny", {"item_id": "CAP-3"}).json()["job_id"]
    held(g, third, 1)
    small = phone.new_page()
    small.goto(f"{g.base}/dashboard/reviews")
    assert small.locator(f'article[data-job="{third}"]').count() == 1
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    small.screenshot(path=str(ARTIFACTS / "reviews-phone.png"), full_page=True)
    phone.close()
    context.close()
    assert len(receiver.calls()) == 2  # one callback per approval, none for the held third
    assert httpx.get(f"{g.base}/healthz", timeout=10).status_code == 200
