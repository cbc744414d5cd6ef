"""The review queue: a QC policy of ``on_fail: review`` holds a job for a person.

When a workflow's ``quality_check`` says ``on_fail: review`` and no output of it passed, the run
goes on as ``deliver_with_warning`` would (metadata, export), but the worker does not end the
job: it holds it, ``awaiting_review``, in one transaction that publishes the outputs (so their
URLs work for the reviewer), settles the attempt's credits, closes the attempt
(``awaiting_review``) and stores the candidate payload and the quality reports (a
``job_reviews`` row). Nothing is delivered and no callback goes out while it is held.

A person then decides (``POST /v1/jobs/{job_id}/review``, or the dashboard):

- **approve**: the job ends ``succeeded`` and the payload is delivered, with the reviewer's
  ``alt_text`` and ``caption`` (when given) on every output and in ``seo``. Its
  ``quality_warning`` still lists every check that failed, by how much, its message saying that
  a reviewer approved it: an output that failed QC is never delivered as if it had passed.
- **reject** (with a ``note``): the job generates again, a new attempt of the same job through
  the normal queue and flow control (budget, fair share, pause), with every rejecting note so
  far folded into its prompts (``prompt_used`` shows them); its retry schedule starts afresh.
  It may be held again (round 2, ...).

Here: what the worker and the API need of it (whether a run needs review, the approved payload,
the review body's checks); the store's part is :mod:`genhook.store.reviews`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from genhook.contract.completion import now, zulu
from genhook.errors import ErrorCode, GenhookError
from genhook.workflow.result import RunResult
from genhook.workflow.template import Workflow

NOTE_LIMIT = 1000
"""The longest note a reviewer may write (it is folded into a prompt)."""
ALT_TEXT_LIMIT = 1000
"""The longest alt text a reviewer may set (the metadata node's own ceiling)."""
CAPTION_LIMIT = 2200
"""The longest caption a reviewer may set (the longest the common platforms take)."""
FIELDS = ("decision", "note", "alt_text", "caption")
"""What a review body may carry."""
APPROVED_LEAD = "approved by a reviewer although it failed quality checks"
"""How an approved payload's ``quality_warning.message`` begins."""

Decision = Literal["approve", "reject"]


@dataclass(frozen=True)
class ReviewBody:
    """A checked review: the decision, and the note, alt text and caption where given."""

    decision: Decision
    note: str | None = None
    alt_text: str | None = None
    caption: str | None = None


def wants_review(workflow: Workflow) -> bool:
    """Whether a quality_check node of ``workflow`` holds failing outputs for review."""
    return any(
        spec.kind == "quality_check" and spec.params.get("on_fail") == "review"
        for spec in workflow.nodes.values()
    )


def needs_review(result: RunResult | None) -> bool:
    """Whether a run's outputs are to be held: a quality check of policy ``review`` failed."""
    return result is not None and any(q.review and not q.passed for q in result.quality)


def quality_reports(result: RunResult) -> list[dict[str, Any]]:
    """Every quality check node's report of the run (passed or not), as stored with a review."""
    return [
        {
            "node": q.node,
            "passed": q.passed,
            "attempts": q.attempts,
            "failed_checks": q.failed_checks,
        }
        for q in result.quality
    ]


def parse_review(body: bytes) -> ReviewBody:
    """A review body, checked: ``invalid_json``, ``unknown_field`` or ``invalid_review`` (422,
    ``field`` naming what is wrong) otherwise."""
    try:
        data = json.loads(body or b"null")
    except ValueError as exc:
        raise GenhookError(ErrorCode.INVALID_JSON, f"the body is not JSON: {exc}") from exc
    return check_review(data)


def check_review(data: Any) -> ReviewBody:
    """:func:`parse_review` on a decoded body (the dashboard's forms come here too)."""
    if not isinstance(data, Mapping):
        raise GenhookError(
            ErrorCode.INVALID_REVIEW,
            'a review is a JSON object: {"decision": "approve" or "reject", "note", '
            '"alt_text", "caption"}',
        )
    for name in data:
        if name not in FIELDS:
            raise GenhookError(
                ErrorCode.UNKNOWN_FIELD,
                f"a review takes {', '.join(FIELDS)}, not {str(name)[:40]!r}",
                field=str(name)[:100],
            )
    decision = data.get("decision")
    if decision not in ("approve", "reject"):
        raise GenhookError(
            ErrorCode.INVALID_REVIEW,
            f'decision must be "approve" or "reject", not {json.dumps(decision)[:40]}',
            field="decision",
        )
    note = _text(data, "note", NOTE_LIMIT)
    alt_text = _text(data, "alt_text", ALT_TEXT_LIMIT)
    caption = _text(data, "caption", CAPTION_LIMIT)
    if decision == "reject":
        if note is None:
            raise GenhookError(
                ErrorCode.INVALID_REVIEW,
                "a reject needs a note: what to change (it is folded into the prompt)",
                field="note",
            )
        for name, value in (("alt_text", alt_text), ("caption", caption)):
            if value is not None:
                raise GenhookError(
                    ErrorCode.INVALID_REVIEW,
                    f"{name} is edited on approve; a rejected job makes new text",
                    field=name,
                )
    return ReviewBody(decision, note, alt_text, caption)


def _text(data: Mapping[str, Any], name: str, limit: int) -> str | None:
    """A text field of a review: absent or null is None; else a string of 1 to ``limit``
    characters once trimmed."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise GenhookError(ErrorCode.INVALID_REVIEW, f"{name} must be a string", field=name)
    value = value.strip()
    if not value:
        raise GenhookError(ErrorCode.INVALID_REVIEW, f"{name} is empty", field=name)
    if len(value) > limit:
        raise GenhookError(
            ErrorCode.INVALID_REVIEW, f"{name} is longer than {limit} characters", field=name
        )
    return value


def approved_payload(
    held: Mapping[str, Any], review: ReviewBody, *, when: Any = None
) -> dict[str, Any]:
    """The payload an approved job delivers: the held one, with the reviewer's alt text and
    caption on every output and in ``seo``, its timestamp the approval's, and its
    ``quality_warning`` (still every failed check) saying that a reviewer approved it."""
    payload = copy.deepcopy(dict(held))
    edits = {k: v for k, v in (("alt_text", review.alt_text), ("caption", review.caption)) if v}
    for output in payload.get("outputs") or ():
        output.update(edits)
    if payload.get("seo"):
        payload["seo"].update(edits)
    warning = payload.get("quality_warning")
    if warning:
        warning["message"] = f"{APPROVED_LEAD}; {warning.get('message', '')}".rstrip("; ")
    payload["timestamp"] = zulu(when or now())
    return payload
