"""The SSRF probe that tests/test_ssrf.py runs in a loopback-only network namespace
(tests/netns.py): a real receiver listens on every address of ``lo`` (where the namespace has
169.254.169.254, 100.100.100.200, 168.63.129.16, fd00:ec2::254, 10.9.8.7 and fd12::7), and
genhook's own trigger-time check and sender, with private callbacks allowed, try each target.
Prints, per URL, what the trigger-time check said, what the sender did, and whether the receiver
got a request."""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

from genhook.delivery import signing
from genhook.delivery.sender import DeliverySender, DueDelivery
from genhook.delivery.ssrf import check_callback_target
from genhook.errors import InvalidInput
from tests.netns import only_loopback

PORT = 8089

#: A name server for the namespace: names that point at the metadata address, and at private ones.
NAMES = {
    "metadata.google.internal": ["169.254.169.254"],
    "rebind.test": ["169.254.169.254"],
    "imds6.test": ["fd00:ec2::254"],
    "lan.test": ["10.9.8.7"],
    "loop.test": ["127.0.0.1"],
    "localhost": ["127.0.0.1", "::1"],  # as /etc/hosts says
    "localhost.": ["127.0.0.1", "::1"],
    "loop6.test": ["::1"],
    "cgnat.test": ["100.64.0.1"],
    "mixed.test": ["93.184.216.34", "127.0.0.1"],
}

TARGETS = [
    "http://169.254.169.254:{port}/latest",
    "http://2852039166:{port}/latest",
    "http://[::ffff:169.254.169.254]:{port}/latest",
    "http://[fd00:ec2::254]:{port}/latest",
    "http://100.100.100.200:{port}/latest",
    "http://168.63.129.16:{port}/machine",
    "http://metadata.google.internal:{port}/computeMetadata/v1/",
    "http://rebind.test:{port}/latest",
    "http://imds6.test:{port}/latest",
    "http://10.9.8.7:{port}/hook",
    "http://[fd12::7]:{port}/hook",
    "http://lan.test:{port}/hook",
    "http://127.0.0.1:{port}/hook",
]


PRODUCTION_TARGETS = [
    # loopback in every spelling
    "http://127.0.0.1:{port}/hook",
    "http://2130706433:{port}/hook",
    "http://0x7f000001:{port}/hook",
    "http://0177.0.0.1:{port}/hook",
    "http://0x7f.0.0.1:{port}/hook",
    "http://127.1:{port}/hook",
    "http://127.0.0.1.:{port}/hook",
    "http://[::1]:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://[::ffff:7f00:1]:{port}/hook",
    "http://[::127.0.0.1]:{port}/hook",
    "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11:{port}/hook",
    "http://localhost:{port}/hook",
    "http://localhost.:{port}/hook",
    # the unspecified address
    "http://0.0.0.0:{port}/hook",
    "http://0:{port}/hook",
    "http://[::]:{port}/hook",
    # private, CGNAT, link-local, metadata, benchmark, multicast, reserved, broadcast
    "http://10.9.8.7:{port}/hook",
    "http://172.16.0.1:{port}/hook",
    "http://192.168.1.1:{port}/hook",
    "http://[fd12::7]:{port}/hook",
    "http://100.64.0.1:{port}/hook",
    "http://169.254.169.254:{port}/latest",
    "http://[fe80::1]:{port}/hook",
    "http://[fd00:ec2::254]:{port}/latest",
    "http://100.100.100.200:{port}/latest",
    "http://168.63.129.16:{port}/machine",
    "http://metadata.google.internal:{port}/computeMetadata/v1/",
    "http://198.18.0.1:{port}/hook",
    "http://224.0.0.1:{port}/hook",
    "http://[ff02::1]:{port}/hook",
    "http://240.0.0.1:{port}/hook",
    "http://255.255.255.255:{port}/hook",
    # names that resolve inside, and a rebinding
    "http://lan.test:{port}/hook",
    "http://loop.test:{port}/hook",
    "http://loop6.test:{port}/hook",
    "http://cgnat.test:{port}/hook",
    "http://mixed.test:{port}/hook",
    "http://rebind.test:{port}/latest",
    # not http, or with credentials
    "ftp://127.0.0.1:{port}/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/_x",
    "http://user:pw@127.0.0.1:{port}/hook",
    "http://user@93.184.216.34:{port}/hook",
]
"""What the production policy (private callbacks not allowed) must refuse: each at trigger time
and at connect time, none reaching the receiver that listens on every address of ``lo``."""


class TableResolver:
    """The namespace's DNS: a fixed table."""

    def resolve(self, host: str, port: int) -> list[str]:
        if host not in NAMES:
            raise OSError(f"{host} does not resolve")
        return list(NAMES[host])


async def main() -> None:
    if not only_loopback():
        sys.exit("refusing to run: this network namespace has more than loopback")
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(f"{request.host}{request.path}")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for host in ("0.0.0.0", "::"):
        await web.TCPSite(runner, host, PORT).start()
    resolver = TableResolver()
    report: dict[str, dict[str, object]] = {}
    secret = signing.new_secret()
    for allow_private, targets, prefix in (
        (True, TARGETS, ""),
        (False, PRODUCTION_TARGETS, "production "),
    ):
        async with DeliverySender(
            allow_private=allow_private, resolver=resolver, timeout=3.0
        ) as sender:
            for template in targets:
                url = template.format(port=PORT)
                try:
                    check_callback_target(url, allow_private=allow_private, resolver=resolver)
                    accepted = True
                except InvalidInput:
                    accepted = False
                before = len(seen)
                due = DueDelivery("msg_probe", url, b"{}", secret, 1, allow_private=allow_private)
                result = await sender.send(due)
                report[f"{prefix}{url}"] = {
                    "accepted": accepted,
                    "outcome": result.outcome,
                    "error": result.error,
                    "reached": len(seen) > before,
                }
    await runner.cleanup()
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
