"""``make demo``: every shipped workflow on each of its sample triggers, assets under ``--out``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genhook.engine import Engine
from genhook.paths import workflows_dir
from genhook.sinks import DirectorySink


def main(argv: list[str] | None = None) -> int:
    """Run the samples; print each payload; exit 1 if any job did not succeed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args(argv)
    engine = Engine.load()
    samples = workflows_dir() / "samples"
    failures = 0
    for wf in engine.workflows.values():
        for sample in sorted((samples / wf.id).glob("*.json")):
            body = json.loads(sample.read_text(encoding="utf-8"))
            sink = DirectorySink(args.out / wf.id / sample.stem)
            outcome = engine.execute(wf, body, sink)
            payload = outcome.payload.to_json()
            print(f"== {wf.id} <- {sample.name}: {payload['status']}", file=sys.stderr)
            print(json.dumps(payload, indent=2, ensure_ascii=False))
            failures += outcome.error is not None
    print(f"assets written under {args.out.resolve()}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
