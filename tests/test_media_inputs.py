"""Media inputs of templates (``format: uri`` with ``x-media: image``): how a template declares
one, what a trigger's URL must be (checked at the edge, 422 ``invalid_value`` naming the field),
and the run's side (:func:`genhook.media.fetch.fetch_inputs`) against a loopback server."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from genhook.api.app import create_app
from genhook.backends.base import BackendRegistry
from genhook.catalog import Catalog
from genhook.config import Settings
from genhook.errors import ErrorCode, GenhookError, InvalidInput, TemplateError
from genhook.media.fetch import MediaFetcher, fetch_inputs, install_fetcher, process_fetcher
from genhook.nodes.generate import Generate
from genhook.presets import Presets
from genhook.runtime import Runtime
from genhook.workflow.inputs import (
    check_media_targets,
    check_trigger,
    media_needs_lookup,
    media_urls,
)
from genhook.workflow.node import RunContext
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.runner import run_workflow
from genhook.workflow.template import Workflow, parse_workflow
from tests import test_input_fetch as loopback
from tests.test_input_fetch import PNG, Server, send
from tests.test_templates import GOOD

MEDIA_FIELD = """\
    reference_image_url:
      format: uri
      x-media: image
      description: A photo of the product, for image-to-image.
"""


def media_template(extra: str = MEDIA_FIELD) -> str:
    """The small template of the template tests (not a shipped one, which may change) with
    ``extra`` added to its input properties (default: an optional image input)."""
    anchor = "  properties:\n"
    assert GOOD.count(anchor) == 1
    return GOOD.replace(anchor, anchor + extra)


@pytest.fixture(scope="module")
def workflow(presets: Presets, nodes: NodeRegistry) -> Workflow:
    return parse_workflow(media_template(), "tiny.yaml", presets, nodes)


TRIGGER = {
    "item_id": "SKU-1",
    "name": "Linen Shirt",
    "target_style": "lifestyle",
    "target_platform": "instagram_feed",
}


# -- the template ------------------------------------------------------------------------------


def test_media_input_accepted_and_published(workflow: Workflow) -> None:
    """A media input is a string in format uri (filled in), published as declared, and the
    workflow's error codes say what fetching it can end with."""
    assert workflow.media_inputs == {"reference_image_url": "image"}
    prop = workflow.describe()["input_schema"]["properties"]["reference_image_url"]
    assert prop["type"] == "string" and prop["format"] == "uri" and prop["x-media"] == "image"
    assert prop["maxLength"] == 2048
    codes = [c["error_code"] for c in workflow.describe()["error_codes"]]
    assert {"input_fetch_failed", "invalid_input_media"} <= set(codes)
    assert "reference_image_url" not in workflow.input_schema.get("required", [])


def test_workflow_without_media_inputs_lists_no_fetch_codes(
    presets: Presets, nodes: NodeRegistry
) -> None:
    plain = parse_workflow(media_template(""), "plain.yaml", presets, nodes)
    assert plain.media_inputs == {}
    codes = [c["error_code"] for c in plain.error_codes()]
    assert "invalid_input_media" not in codes and "input_fetch_failed" not in codes


@pytest.mark.parametrize(
    ("extra", "where", "says"),
    [
        ("    logo:\n      x-media: video\n", "x-media", "x-media must be one of ['image']"),
        ("    logo:\n      type: integer\n      x-media: image\n", "type", "type is string"),
        ("    logo:\n      format: email\n      x-media: image\n", "format", "format is uri"),
        ("    logo:\n      x-media: image\n      enum: [a]\n", "enum", "no enum"),
    ],
)
def test_bad_media_declarations_refused_with_their_line(
    presets: Presets, nodes: NodeRegistry, extra: str, where: str, says: str
) -> None:
    with pytest.raises(TemplateError) as info:
        parse_workflow(media_template(extra), "bad.yaml", presets, nodes)
    problems = [p for p in info.value.problems if p.where == f"input.properties.logo.{where}"]
    assert problems and says in problems[0].message, info.value.problems
    assert problems[0].line is not None


@pytest.mark.parametrize(
    ("wired", "says"),
    [
        ("${input.name}", "x-media field (fields: reference_image_url)"),
        ("https://cdn.example.com/fixed.png", "x-media field"),
        ("${prompt.prompt}", "x-media field"),
    ],
)
def test_generate_inputs_wire_media_fields_only(
    presets: Presets, nodes: NodeRegistry, wired: str, says: str
) -> None:
    """Only URLs checked at trigger time reach the fetcher: an input wires an x-media field."""
    text = media_template().replace(
        "      width: 256\n", f"      width: 256\n      inputs:\n        reference: {wired}\n", 1
    )
    with pytest.raises(TemplateError) as info:
        parse_workflow(text, "bad.yaml", presets, nodes)
    problems = [p for p in info.value.problems if p.where == "nodes.image.with.inputs.reference"]
    assert problems and says in problems[0].message, info.value.problems


# -- the trigger -------------------------------------------------------------------------------


def test_trigger_with_a_public_url_accepted_without_a_lookup(workflow: Workflow) -> None:
    body = {**TRIGGER, "reference_image_url": "https://cdn.example.com/p/sku-1.png?v=2"}
    checked = check_trigger(workflow, body)
    assert media_urls(workflow, checked.input) == {
        "reference_image_url": "https://cdn.example.com/p/sku-1.png?v=2"
    }
    assert media_needs_lookup(workflow, checked.input)
    assert media_urls(workflow, check_trigger(workflow, TRIGGER).input) == {}


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "/relative/photo.png",
        "ftp://cdn.example.com/p.png",
        "file:///etc/passwd",
        "http://user:pw@cdn.example.com/p.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://0xa9fea9fe/",
        "http://[fd00:ec2::254]/latest",
        "http://[fe80::1]/p.png",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://0.0.0.0/p.png",
        "http://" + "a" * 2100 + ".example/p.png",
    ],
)
def test_bad_urls_are_invalid_value_naming_the_field(workflow: Workflow, url: str) -> None:
    """Refused under every policy, at the edge, without a lookup."""
    with pytest.raises(InvalidInput) as info:
        check_trigger(workflow, {**TRIGGER, "reference_image_url": url})
    assert info.value.code is ErrorCode.INVALID_VALUE
    assert info.value.field == "reference_image_url"
    assert "callback" not in info.value.description


@dataclass
class FakeDNS:
    """The outside world's DNS: a fixed table (as tests/test_ssrf.py's)."""

    table: dict[str, list[str]]
    calls: list[str] = field(default_factory=list)

    def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


DNS = {"cdn.example.com": ["93.184.216.34"], "inside.example.com": ["10.0.0.5"]}


@pytest.mark.parametrize(
    ("url", "allow_private", "refused_for"),
    [
        ("https://cdn.example.com/p.png", False, None),
        ("https://inside.example.com/p.png", False, "10.0.0.5"),
        ("https://inside.example.com/p.png", True, None),
        ("http://10.0.0.5/p.png", False, "10.0.0.5"),
        ("http://127.0.0.1:8080/p.png", False, "127.0.0.1"),
        ("http://127.0.0.1:8080/p.png", True, None),
        ("https://nowhere.example.com/p.png", True, "does not resolve"),
    ],
)
def test_targets_checked_under_the_policy(
    workflow: Workflow, url: str, allow_private: bool, refused_for: str | None
) -> None:
    """What callback_url gets at trigger time: literals under the policy, names resolved."""
    checked = check_trigger(workflow, {**TRIGGER, "reference_image_url": url})
    dns = FakeDNS(DNS)
    if refused_for is None:
        check_media_targets(workflow, checked.input, allow_private=allow_private, resolver=dns)
        return
    with pytest.raises(InvalidInput) as info:
        check_media_targets(workflow, checked.input, allow_private=allow_private, resolver=dns)
    assert info.value.code is ErrorCode.INVALID_VALUE
    assert info.value.field == "reference_image_url"
    assert refused_for in info.value.description
    assert "'reference_image_url' host" in info.value.description


# -- through the API ---------------------------------------------------------------------------


@dataclass
class Api:
    runtime: Runtime
    client: httpx.AsyncClient
    auth: dict[str, str]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(media_template())
    settings = Settings(data_dir=tmp_path, workflows_dir=folder).resolved()
    runtime = Runtime.build(settings)
    transport = httpx.ASGITransport(app=create_app(runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://genhook.test") as c:
            key = runtime.store.create_service("shop")["api_key"]
            yield Api(runtime, c, {"Authorization": f"Bearer {key}"})
    finally:
        runtime.store.close()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url", ["ftp://cdn.example.com/p.png", "http://169.254.169.254/latest/meta-data/"]
)
async def test_invalid_url_in_a_trigger_is_422_naming_the_field(api: Api, url: str) -> None:
    body = {**TRIGGER, "reference_image_url": url}
    r = await api.client.post("/v1/workflows/tiny/runs", json=body, headers=api.auth)
    assert r.status_code == 422, r.text
    error = r.json()
    assert error["error_code"] == "invalid_value"
    assert error["field"] == "reference_image_url"
    assert error["job_id"].startswith("job_")


@pytest.mark.anyio
async def test_trigger_with_a_media_url_accepted(api: Api) -> None:
    body = {**TRIGGER, "reference_image_url": "https://93.184.216.34/p/sku-1.png"}
    r = await api.client.post("/v1/workflows/tiny/runs", json=body, headers=api.auth)
    assert r.status_code == 202, r.text
    shown = await api.client.get("/v1/workflows/tiny", headers=api.auth)
    prop = shown.json()["input_schema"]["properties"]["reference_image_url"]
    assert (prop["format"], prop["x-media"]) == ("uri", "image")


# -- the run's side ----------------------------------------------------------------------------


server = loopback.server  # the loopback image server fixture


def _context(
    workflow: Workflow, presets: Presets, nodes: NodeRegistry, trigger: dict[str, Any]
) -> RunContext:
    catalog = Catalog(presets, nodes, {workflow.id: workflow})
    return catalog.context(workflow, trigger, job_id="job_media", backends=BackendRegistry())


def test_fetch_inputs_names_the_trigger_field(
    server: Server, workflow: Workflow, presets: Presets, nodes: NodeRegistry, tmp_path: Path
) -> None:
    """The generate node's inputs (input name -> wired URL): fetched, checked and decoded;
    an optional input not given is left out; an error names the trigger field it came from."""
    server.routes["/p.png"] = lambda r: send(r, PNG)
    url = server.url("/p.png")
    ctx = _context(workflow, presets, nodes, {**TRIGGER, "reference_image_url": url})
    fetcher = MediaFetcher(allow_private=True, cache_dir=tmp_path / "inputs")
    try:
        got = fetch_inputs(ctx, {"reference": url, "logo": None}, fetcher=fetcher)
        assert list(got) == ["reference"]
        assert (got["reference"].width, got["reference"].height) == (64, 48)
        assert got["reference"].content_type == "image/png"
        missing = server.url("/gone.png")
        ctx = _context(workflow, presets, nodes, {**TRIGGER, "reference_image_url": missing})
        with pytest.raises(GenhookError) as info:
            fetch_inputs(ctx, {"reference": missing}, fetcher=fetcher)
    finally:
        fetcher.close()
    assert info.value.code is ErrorCode.INVALID_INPUT_MEDIA
    assert info.value.field == "reference_image_url"


def test_the_process_fetcher_follows_the_settings(tmp_path: Path) -> None:
    """Installed from the settings: the limits, the policy and the cache under the data dir;
    by default (none installed) public addresses only."""
    settings = Settings(
        data_dir=tmp_path, input_max_bytes=1234, input_timeout=7.0, allow_private_callbacks=True
    )
    previous = install_fetcher(MediaFetcher.from_settings(settings))
    try:
        fetcher = process_fetcher()
        assert (fetcher.max_bytes, fetcher.timeout, fetcher.allow_private) == (1234, 7.0, True)
        assert fetcher.cache_dir == tmp_path / "inputs"
        install_fetcher(None)
        assert process_fetcher().allow_private is False
    finally:
        install_fetcher(previous)


def test_a_run_hands_the_fetched_image_to_the_backend(
    server: Server, presets: Presets, nodes: NodeRegistry, tmp_path: Path
) -> None:
    """End to end through the generate node: the image wired from the trigger is fetched once
    and reaches the backend as ``request.inputs``; the dry run fetches nothing."""
    if "inputs" not in Generate.Params.model_fields:
        pytest.skip("the generate node has no inputs parameter yet")
    text = media_template().replace(
        "      width: 256\n",
        "      width: 256\n      inputs:\n        reference: ${input.reference_image_url}\n",
        1,
    )
    wf = parse_workflow(text, "wired.yaml", presets, nodes)
    server.routes["/p.png"] = lambda r: send(r, PNG)
    trigger = check_trigger(wf, {**TRIGGER, "reference_image_url": server.url("/p.png")}).input
    catalog = Catalog(presets, nodes, {wf.id: wf})
    catalog.plan(wf, trigger)
    assert server.seen["/p.png"] == 0
    fetcher = MediaFetcher(allow_private=True, cache_dir=tmp_path / "inputs")
    previous = install_fetcher(fetcher)
    try:
        ctx = catalog.context(
            wf, trigger, job_id="job_wired", backends=BackendRegistry.from_entry_points()
        )
        run_workflow(wf, nodes, ctx)
    finally:
        install_fetcher(previous)
        fetcher.close()
    given = [g.request.inputs["reference"] for g in ctx.generations]
    assert given and all((m.data, m.width, m.height) == (PNG, 64, 48) for m in given)
    assert server.seen["/p.png"] == 1
