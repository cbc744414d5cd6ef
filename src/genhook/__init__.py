"""genhook: turn a JSON trigger into QC'd, multi-platform generated assets and a signed callback."""

from typing import TYPE_CHECKING, Any

from genhook.errors import ErrorCode, GenhookError

if TYPE_CHECKING:
    from genhook.client import ApiError, AsyncClient, Client, Receiver

__version__ = "0.1.0"
__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "ErrorCode",
    "GenhookError",
    "Receiver",
    "__version__",
]

_CLIENT = ("ApiError", "AsyncClient", "Client", "Receiver")
"""Exported from genhook.client, imported on first use: ``import genhook`` stays light."""


def __getattr__(name: str) -> Any:
    if name in _CLIENT:
        import genhook.client

        return getattr(genhook.client, name)
    raise AttributeError(f"module 'genhook' has no attribute {name!r}")
