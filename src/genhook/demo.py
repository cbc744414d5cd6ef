"""``make demo``: the whole round trip on this machine.

Starts ``genhook serve`` (SQLite and files under ``var/demo``) and a local callback receiver,
sends every shipped workflow's sample triggers over HTTP, verifies each callback's signature with
the ``standardwebhooks`` library, downloads every asset into ``out/``, and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from genhook.paths import workflows_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CallbackReceiver:
    """What a requesting system runs: verify the signature, keep the payload, answer 204."""

    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.payloads: dict[str, Any] = {}
        self.rejected = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    payload = receiver.webhook.verify(body, dict(self.headers.items()))
                except WebhookVerificationError:
                    with receiver.lock:
                        receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.payloads[payload["job_id"]] = payload
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callbacks/genhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Run the round trip; exit 1 if any sample does not come back signed and successful."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--data-dir", type=Path, default=Path("var/demo"))
    args = parser.parse_args(argv)
    genhook = str(Path(sys.executable).with_name("genhook"))
    port = _free_port()
    env = {
        **os.environ,
        "GENHOOK_DATA_DIR": str(args.data_dir),
        "GENHOOK_ALLOW_PRIVATE_CALLBACKS": "true",  # the receiver is on this machine
    }
    service = json.loads(
        subprocess.run(
            [genhook, "services", "create", f"demo-{int(time.time())}"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    receiver = CallbackReceiver(service["webhook_secret"])
    server = subprocess.Popen([genhook, "serve", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        return _round_trip(base, service, receiver, args.out)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        receiver.server.shutdown()


def _round_trip(base: str, service: dict[str, Any], receiver: CallbackReceiver, out: Path) -> int:
    client = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {service['api_key']}"}, timeout=30
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            print("genhook serve did not start", file=sys.stderr)
            return 1
        time.sleep(0.2)
    sent: dict[str, str] = {}
    for sample in sorted((workflows_dir() / "samples").glob("*/*.json")):
        workflow = sample.parent.name
        body = {**json.loads(sample.read_text(encoding="utf-8")), "callback_url": receiver.url}
        answer = client.post(f"/v1/workflows/{workflow}/runs", json=body)
        answer.raise_for_status()
        sent[answer.json()["job_id"]] = f"{workflow}/{sample.stem}"
        print(f"-> {workflow} <- {sample.name}: {answer.status_code} {answer.json()['job_id']}")
    while set(sent) - set(receiver.payloads) and time.monotonic() < deadline + 120:
        time.sleep(0.1)
    failures = 0
    for job_id, name in sent.items():
        payload = receiver.payloads.get(job_id)
        if payload is None:
            print(f"<- {name}: no callback", file=sys.stderr)
            failures += 1
            continue
        target = out / job_id
        target.mkdir(parents=True, exist_ok=True)
        for output in payload["outputs"]:
            data = httpx.get(output["asset_url"], timeout=30).content
            (target / output["filename_suggestion"]).write_bytes(data)
        failures += payload["status"] != "success"
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        print(
            f"<- {name}: {payload['status']}, signature verified, {len(payload['outputs'])} "
            f"files in {target}, {payload['metadata']['processing_time_seconds']} s of work",
            file=sys.stderr,
        )
    if receiver.rejected:
        print(f"{receiver.rejected} callbacks failed signature checks", file=sys.stderr)
        failures += receiver.rejected
    print(f"{len(sent) - failures} of {len(sent)} round trips verified", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
