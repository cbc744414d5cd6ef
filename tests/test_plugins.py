"""Node kinds and backends are plugins: built-ins and a third party's load the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from genhook.backends.base import BackendRegistry
from genhook.workflow.registry import NodeRegistry

PLUGIN = """
from typing import Any, ClassVar
from collections.abc import Mapping
from pydantic import BaseModel
from genhook.workflow.node import BaseNode


class Shout(BaseNode):
    kind = "shout"

    class Params(BaseModel):
        text: str

    outputs: ClassVar[Mapping[str, Any]] = {"text": str}

    def run(self, name: str, params: Any, ctx: Any) -> Mapping[str, Any]:
        return {"text": params.text.upper() + "!"}
"""

TEMPLATE = """\
id: shouty
input:
  required: [product_id, product_name]
  properties:
    product_id: {type: string}
    product_name: {type: string}
nodes:
  loud:
    kind: shout
    with:
      text: ${input.product_name}
  image:
    kind: generate
    with:
      prompt: ${loud.text}
      subject: ${loud.text}
      width: 256
      height: 256
  export:
    kind: export
    with:
      image: ${image.image}
      platforms: avatar
outputs:
  assets:
    - ${export.assets}
"""


def test_builtins_come_through_entry_points() -> None:
    """The six built-in node kinds and the procedural backend load from entry points."""
    kinds = NodeRegistry.from_entry_points().kinds()
    assert {
        "prompt_builder",
        "style_preset",
        "generate",
        "quality_check",
        "metadata",
        "export",
    } <= set(kinds)
    assert "procedural" in BackendRegistry.from_entry_points().names()


def test_third_party_node_kind_through_entry_points(tmp_path: Path) -> None:
    """An installed distribution's `genhook.nodes` entry point adds a kind usable in templates."""
    site = tmp_path / "site"
    (site / "shout_plugin").mkdir(parents=True)
    (site / "shout_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    dist = site / "shout_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[genhook.nodes]\nshout = shout_plugin:Shout\n")
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "shouty.yaml").write_text(TEMPLATE, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(site), "GENHOOK_WORKFLOWS_DIR": str(flows)}
    exe = str(Path(sys.executable).with_name("genhook"))
    trigger = json.dumps({"product_id": "P1", "product_name": "bell"})
    proc = subprocess.run(
        [exe, "run", "shouty", "--input", trigger, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    payload = json.loads(proc.stdout)
    assert payload["metadata"]["prompt_used"] == "BELL!"
    assert payload["outputs"][0]["platform_code"] == "avatar"
    env.pop("PYTHONPATH")
    proc = subprocess.run(
        [exe, "workflows", "validate", str(flows / "shouty.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown node kind 'shout'" in proc.stderr
