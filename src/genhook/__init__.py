"""genhook: turn a JSON trigger into QC'd, multi-platform generated assets and a signed callback."""

from genhook.errors import ErrorCode, GenhookError

__version__ = "0.1.0"
__all__ = ["ErrorCode", "GenhookError", "__version__"]
