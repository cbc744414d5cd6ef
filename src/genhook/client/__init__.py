"""genhook's Python client and callback receiver (httpx and pydantic; nothing of the server).

``Client`` and ``AsyncClient`` call the HTTP API with typed results, retries on 429/503 and on
lost connections, and an Idempotency-Key on every trigger; ``Receiver`` verifies a callback's
Standard Webhooks signature and parses it. See docs/client.md.
"""

from genhook.client._core import ApiError, RetryPolicy, WaitTimeout
from genhook.client.aio import AsyncClient
from genhook.client.models import (
    Accepted,
    Attempt,
    Batch,
    BatchEvent,
    BatchItem,
    CancelResult,
    CompletionPayload,
    DryRun,
    ErrorInfo,
    Job,
    JobEvent,
    JobPage,
    JobStatusEvent,
    OperatorEvent,
    Output,
    Review,
    ReviewDecision,
    UnknownEvent,
    Workflow,
)
from genhook.client.receiver import (
    Receiver,
    WebhookEvent,
    WebhookPayloadError,
    WebhookVerificationError,
    parse_event,
    verify_webhook,
)
from genhook.client.sync import Client

__all__ = [
    "Accepted",
    "ApiError",
    "AsyncClient",
    "Attempt",
    "Batch",
    "BatchEvent",
    "BatchItem",
    "CancelResult",
    "Client",
    "CompletionPayload",
    "DryRun",
    "ErrorInfo",
    "Job",
    "JobEvent",
    "JobPage",
    "JobStatusEvent",
    "OperatorEvent",
    "Output",
    "Receiver",
    "RetryPolicy",
    "Review",
    "ReviewDecision",
    "UnknownEvent",
    "WaitTimeout",
    "WebhookEvent",
    "WebhookPayloadError",
    "WebhookVerificationError",
    "Workflow",
    "parse_event",
    "verify_webhook",
]
