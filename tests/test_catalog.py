"""The API loads no backend: its runtime holds the workflow catalog, and the runner (with the
backends) is built on first use, which only workers and ``genhook run`` make.

Proven in a fresh interpreter, so that ``sys.modules`` says what the API really imported: a third
party's backend, installed through the ``genhook.backends`` entry point group, records when its
module is imported and when it is built. Its price is the pricing file's, like every backend's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from genhook.paths import shipped_dir

BACKEND = """
from pathlib import Path

from genhook.backends.base import BackendStatus

LOG = Path(__file__).with_name("log.txt")
with LOG.open("a") as log:
    log.write("imported\\n")


class Recorded:
    name = "recorded"
    kinds = frozenset({"image"})

    def __init__(self) -> None:
        with LOG.open("a") as log:
            log.write("built\\n")

    def status(self) -> BackendStatus:
        return BackendStatus(True, "test")

    def estimate_cost(self, request):
        return 2.5

    def generate(self, request):
        raise NotImplementedError
"""

PRICED = """\
id: priced
input:
  required: [name]
  properties:
    name: {type: string}
nodes:
  image:
    kind: generate
    with:
      prompt: ${input.name}
      backend: recorded
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

SCRIPT = """
import json, sys
import anyio, httpx
from pathlib import Path
from genhook.api.app import create_app
from genhook.config import Settings
from genhook.runtime import Runtime

BACKENDS = ("genhook.backends.procedural", "genhook.backends.openai_images", "recorded_backend")
TRIGGER = {"product_id": "SKU-1", "product_name": "Linen Shirt", "target_style": "minimal",
           "target_platform": "instagram_feed"}
RUNS = "/v1/workflows/product-image/runs"
tmp = Path(sys.argv[1])
settings = Settings(data_dir=tmp / "var", workflows_dir=tmp / "flows",
                    pricing_file=tmp / "pricing.yaml").resolved()
runtime = Runtime.build(settings)
app = create_app(runtime)
report = {}

def loaded():
    return sorted(m for m in BACKENDS if m in sys.modules)

async def main():
    auth = {"Authorization": "Bearer " + runtime.store.create_service("shop")["api_key"]}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as c:
        codes = [
            (await c.get("/v1/workflows", headers=auth)).status_code,
            (await c.get("/v1/workflows/product-image", headers=auth)).status_code,
            (await c.get("/v1/workflows/product-imag", headers=auth)).status_code,
            (await c.post(RUNS, json=TRIGGER, headers=auth)).status_code,
            (await c.post(RUNS, json={}, headers=auth)).status_code,
        ]
        dry = await c.post("/v1/workflows/product-image/dry-run", json=TRIGGER, headers=auth)
        codes.append(dry.status_code)
        report["api"] = {"codes": codes, "loaded": loaded(), "engine": runtime._engine is not None}
        report["dry_run_credits"] = dry.json()["credit_estimate"]
        priced = await c.post("/v1/workflows/priced/dry-run", json={"name": "x"}, headers=auth)
        report["priced"] = {"code": priced.status_code, "credits": priced.json()["credit_estimate"],
                            "loaded": loaded()}

anyio.run(main)
runtime.engine  # what a worker process does on first use
report["worker"] = {"loaded": loaded(), "engine": runtime._engine is not None}
runtime.store.close()
print(json.dumps(report))
"""


def test_the_api_builds_no_backend_and_the_runner_builds_them(tmp_path: Path) -> None:
    """Listing and describing workflows, triggers (accepted and refused) and dry runs import no
    backend module and build no backend, a dry run on a plugin's backend included (its price is
    the pricing file's); the runtime's engine, built on first use, brings the backends in."""
    site = tmp_path / "site"
    (site / "recorded_backend").mkdir(parents=True)
    (site / "recorded_backend" / "__init__.py").write_text(textwrap.dedent(BACKEND))
    dist = site / "recorded_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: recorded-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[genhook.backends]\nrecorded = recorded_backend:Recorded\n"
    )
    flows = tmp_path / "flows"
    shutil.copytree(shipped_dir("workflows"), flows)
    (flows / "priced.yaml").write_text(PRICED)
    pricing = (shipped_dir("presets") / "pricing.yaml").read_text()
    (tmp_path / "pricing.yaml").write_text(pricing + 'recorded:\n  "*": {per_image: 2.5}\n')
    log = site / "recorded_backend" / "log.txt"
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["api"] == {"codes": [200, 200, 404, 202, 422, 200], "loaded": [], "engine": False}
    assert report["dry_run_credits"] == {"expected": 0.0, "max": 0.0}
    # a plugin's price is the pricing file's: the dry run imports and builds no backend
    assert report["priced"] == {
        "code": 200,
        "credits": {"expected": 2.5, "max": 2.5},
        "loaded": [],
    }
    assert report["worker"]["engine"] is True
    assert {"genhook.backends.procedural", "genhook.backends.openai_images"} <= set(
        report["worker"]["loaded"]
    )
    # only the worker's registry imported and built it
    assert log.read_text().split() == ["imported", "built"]
