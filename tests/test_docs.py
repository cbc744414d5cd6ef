"""Published docs that are generated from code stay in step with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_api_reference_is_current() -> None:
    """docs/api.md is exactly what scripts/openapi_doc.py renders from the app's OpenAPI."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "openapi_doc.py"), "--check", "docs/api.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_contract_is_published() -> None:
    """docs/contract.md carries the public contract."""
    text = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    assert "POST /v1/workflows/{workflow_id}/runs" in text
    assert "completion-v1.json" in text
