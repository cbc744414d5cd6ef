"""`genhook run` end to end: every shipped workflow, every sample; and every invalid input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from genhook.contract.schema import completion_schema
from genhook.engine import Engine
from genhook.presets import Presets
from tests.conftest import SAMPLES, CliResult

PIL_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG", "avif": "AVIF"}
SCHEMA = Draft202012Validator(completion_schema())

SAMPLE_FILES = sorted(SAMPLES.glob("*/*.json"))


def path_of(url: str) -> Path:
    parts = urlsplit(url)
    assert parts.scheme == "file"
    return Path(unquote(parts.path))


def expected_presets(
    wf_id: str, sample: dict[str, Any], engine: Engine, presets: Presets
) -> set[str]:
    wf = engine.workflow(wf_id)
    codes: set[str] = set()
    for spec in wf.nodes.values():
        if spec.kind != "export":
            continue
        value = spec.params["platforms"]
        targets = value if isinstance(value, list) else [value]
        for target in targets:
            if target == "${input.target_platform}":
                props = wf.input_schema["properties"]["target_platform"]
                target = sample.get("target_platform", props.get("default"))
            codes |= {p.code for p in presets.resolve_platforms(target) or []}
    return codes


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sample_runs_end_to_end(
    sample: Path,
    tmp_path: Path,
    genhook: Callable[..., CliResult],
    engine: Engine,
    presets: Presets,
) -> None:
    """Each sample succeeds; every output decodes at its preset's size and format."""
    wf_id = sample.parent.name
    body = json.loads(sample.read_text(encoding="utf-8"))
    out = tmp_path / "assets"
    result = genhook("run", wf_id, "--input", str(sample), "--out", str(out))
    assert result.code == 0, result.stderr + result.stdout
    payload = result.json
    SCHEMA.validate(payload)
    assert payload["status"] == "success" and payload["event"] == "job.completed"
    assert payload["workflow_id"] == wf_id and payload["job_id"].startswith("job_")
    assert payload["error"] is None and payload["quality_warning"] is None
    wf = engine.workflow(wf_id)
    assert payload["external_id"] == str(body[wf.external_id])
    assert payload["metadata"]["model_id"] == "procedural/procedural-v1"
    assert payload["metadata"]["credit_cost"] == 0.0
    assert payload["metadata"]["attempts"] == 1
    assert isinstance(payload["metadata"]["seed"], int)
    assert payload["metadata"]["prompt_used"]
    assert payload["seo"]["alt_text"] and payload["seo"]["caption"]
    assert {o["platform_code"] for o in payload["outputs"]} == expected_presets(
        wf_id, body, engine, presets
    )
    names = [o["filename_suggestion"] for o in payload["outputs"]]
    assert len(names) == len(set(names))
    for output in payload["outputs"]:
        preset = presets.platforms[output["platform_code"]]
        path = path_of(output["asset_url"])
        assert path.parent == out.resolve() and path.name == output["filename_suggestion"]
        data = path.read_bytes()
        assert len(data) == output["bytes"]
        assert hashlib.sha256(data).hexdigest() == output["sha256"]
        assert (output["width"], output["height"]) == (preset.width, preset.height)
        assert output["format"] == preset.format
        if output["asset_type"] == "video":  # decoded in tests/test_video_pipeline.py
            assert output["duration_seconds"] > 0 and output["fps"] > 0
            assert path_of(output["poster_url"]).is_file()
        else:
            with Image.open(path) as img:
                img.load()
                assert img.size == (preset.width, preset.height)
                assert img.format == PIL_FORMATS[preset.format]
        name = output["filename_suggestion"]
        assert len(name) <= 100 and name == name.lower() and name.isascii()
        assert name.endswith(f"{preset.width}x{preset.height}.{preset.extension}")
        assert output["alt_text"] == payload["seo"]["alt_text"]


def test_product_image_matches_contract_example(
    tmp_path: Path, genhook: Callable[..., CliResult]
) -> None:
    """The contract's e-commerce trigger gives the contract's filename for instagram_feed."""
    trigger = {
        "product_id": "SKU-123",
        "product_name": "Linen Shirt",
        "target_style": "lifestyle",
        "target_platform": "instagram_feed",
    }
    result = genhook("run", "product-image", "--input", json.dumps(trigger), "--out", str(tmp_path))
    assert result.code == 0, result.stderr
    (output,) = result.json["outputs"]
    assert output["filename_suggestion"] == "sku-123-linen-shirt-instagram-feed-1080x1080.jpg"
    assert result.json["external_id"] == "SKU-123"


def test_same_trigger_same_image(tmp_path: Path, genhook: Callable[..., CliResult]) -> None:
    """The procedural backend is deterministic: one trigger twice gives identical bytes."""
    sample = SAMPLES / "product-image" / "linen-shirt.json"
    a = genhook("run", "product-image", "--input", str(sample), "--out", str(tmp_path / "a")).json
    b = genhook("run", "product-image", "--input", str(sample), "--out", str(tmp_path / "b")).json
    assert a["job_id"] != b["job_id"]
    assert [o["sha256"] for o in a["outputs"]] == [o["sha256"] for o in b["outputs"]]


def test_callback_url_does_not_change_the_image(
    tmp_path: Path, genhook: Callable[..., CliResult]
) -> None:
    """No callback, callback A, callback B: one seed, identical bytes (the envelope is not
    input). The files on disk are hashed again, not only the payload's claims."""
    runs = []
    for i, extra in enumerate(
        [
            {},
            {"callback_url": "https://a.example.com/hook"},
            {"callback_url": "https://b.example.com/x"},
        ]
    ):
        body = json.dumps({**VALID, **extra})
        result = genhook("run", "product-image", "--input", body, "--out", str(tmp_path / str(i)))
        assert result.code == 0, result.stderr
        runs.append(result.json)
    assert len({r["metadata"]["seed"] for r in runs}) == 1
    digests = [
        [hashlib.sha256(path_of(o["asset_url"]).read_bytes()).hexdigest() for o in r["outputs"]]
        for r in runs
    ]
    assert digests[0] == digests[1] == digests[2]
    assert digests[0] == [o["sha256"] for o in runs[0]["outputs"]]


VALID = {
    "product_id": "SKU-9",
    "product_name": "Desk Lamp",
    "target_style": "minimal",
    "target_platform": "x_post",
}

INVALID: list[tuple[str, dict[str, Any], str, str | None]] = [
    (
        "missing field",
        {k: v for k, v in VALID.items() if k != "product_name"},
        "missing_field",
        "product_name",
    ),
    ("wrong type", {**VALID, "product_name": 42}, "invalid_type", "product_name"),
    ("unknown style", {**VALID, "target_style": "baroque"}, "unknown_style", "target_style"),
    (
        "unknown platform",
        {**VALID, "target_platform": "myspace"},
        "unknown_platform",
        "target_platform",
    ),
    (
        "bad callback scheme",
        {**VALID, "callback_url": "ftp://example.com/x"},
        "invalid_callback_url",
        "callback_url",
    ),
    (
        "callback not a URL",
        {**VALID, "callback_url": "not a url"},
        "invalid_callback_url",
        "callback_url",
    ),
    ("callback wrong type", {**VALID, "callback_url": 7}, "invalid_callback_url", "callback_url"),
    ("misspelled field", {**VALID, "product_categroy": "x"}, "unknown_field", "product_categroy"),
    ("bad priority", {**VALID, "priority": "asap"}, "invalid_value", "priority"),
    ("too long", {**VALID, "product_id": "x" * 65}, "invalid_value", "product_id"),
    ("empty string", {**VALID, "product_name": ""}, "invalid_value", "product_name"),
    ("not an object", ["SKU-9"], "invalid_body", None),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("name", "body", "code", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_input_exits_2_with_code_and_field(
    name: str,
    body: Any,
    code: str,
    field: str | None,
    tmp_path: Path,
    genhook: Callable[..., CliResult],
) -> None:
    """Invalid input: exit 2, a failed payload with the stable code and the field as sent,
    `attempts` 0 as from the server (no attempt was made), and one human line on stderr."""
    result = genhook("run", "product-image", "--input", json.dumps(body), "--out", str(tmp_path))
    assert result.code == 2, result.stdout + result.stderr
    payload = result.json
    SCHEMA.validate(payload)
    assert payload["status"] == "failed" and payload["outputs"] == []
    assert payload["error"]["error_code"] == code
    assert payload["error"]["field"] == field
    assert payload["error"]["error_description"]
    assert payload["metadata"]["attempts"] == 0
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"genhook run: {code}: ")
    assert not list(tmp_path.iterdir()), "nothing is written for an invalid trigger"


HOSTILE_INPUT = [
    ('{"product_id": NaN}', "NaN"),
    ('{"product_id": 1e999}', "out of range"),
    ('{"product_id": ' + "7" * 5000 + "}", "limit of 20 digits"),
    ('{"product_id": "\\ud800"}', "lone surrogate"),
    ('{"a": ' + "[" * 10_000 + "]" * 10_000 + "}", "limit of 32 levels"),
    ('{"callback_url": "https://a.example/", "callback_url": "https://b.example/"}', "twice"),
]


@pytest.mark.parametrize(("text", "says"), HOSTILE_INPUT, ids=[h[1] for h in HOSTILE_INPUT])
def test_hostile_json_is_refused_like_the_server_does(
    text: str, says: str, tmp_path: Path, genhook: Callable[..., CliResult]
) -> None:
    """The same strict parser as the API: invalid_json, exit 2, no traceback."""
    result = genhook("run", "product-image", "--input", text, "--out", str(tmp_path))
    assert result.code == 2, result.stderr
    assert result.json["error"]["error_code"] == "invalid_json"
    assert says in result.json["error"]["error_description"]
    assert "Traceback" not in result.stderr and result.stderr.startswith("genhook run: ")


def test_input_that_is_not_json(tmp_path: Path, genhook: Callable[..., CliResult]) -> None:
    """Input that is not JSON gives exit 2 and invalid_json, in a file or inline."""
    result = genhook("run", "product-image", "--input", "{oops", "--out", str(tmp_path))
    assert result.code == 2
    assert result.json["error"]["error_code"] == "invalid_json"
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"product_id": "\xff"}')
    result = genhook("run", "product-image", "--input", str(bad), "--out", str(tmp_path / "o"))
    assert (result.code, result.json["error"]["error_code"]) == (2, "invalid_json")


def test_missing_input_file_is_input_not_found(
    tmp_path: Path, genhook: Callable[..., CliResult]
) -> None:
    """A file that is not there is `input_not_found` naming it, not `invalid_json`."""
    result = genhook("run", "product-image", "--input", "no/such/trigger.json")
    assert result.code == 2
    assert result.json["error"]["error_code"] == "input_not_found"
    assert "no/such/trigger.json" in result.json["error"]["error_description"]
    assert result.json["metadata"]["attempts"] == 0
    assert result.stderr.startswith("genhook run: input_not_found: ")


def test_input_from_stdin(tmp_path: Path, genhook: Callable[..., CliResult]) -> None:
    """`--input -` reads the trigger from standard input."""
    result = genhook(
        "run", "product-image", "--input", "-", "--out", str(tmp_path), stdin=json.dumps(VALID)
    )
    assert result.code == 0, result.stderr
    assert result.json["outputs"][0]["platform_code"] == "x_post"


def test_unknown_workflow(tmp_path: Path, genhook: Callable[..., CliResult]) -> None:
    """An unknown workflow id gives exit 2 and unknown_workflow, suggesting the nearest id."""
    result = genhook("run", "no-such-flow", "--input", json.dumps(VALID))
    assert result.code == 2
    assert result.json["error"]["error_code"] == "unknown_workflow"
    near = genhook("run", "product-imag", "--input", json.dumps(VALID))
    assert near.code == 2
    assert "did you mean product-image" in near.json["error"]["error_description"]
    assert "did you mean product-image" in near.stderr


def test_failed_job_exits_1(tmp_path: Path, genhook: Callable[..., CliResult]) -> None:
    """A job that fails after valid input (here: a backend this install lacks) exits 1."""
    template = (Path(__file__).parent.parent / "workflows" / "product-image.yaml").read_text()
    custom = tmp_path / "remote.yaml"
    custom.write_text(
        template.replace("id: product-image", "id: remote-image").replace(
            "backend: default", "backend: nowhere"
        ),
        encoding="utf-8",
    )
    result = genhook("run", str(custom), "--input", json.dumps(VALID), "--out", str(tmp_path / "o"))
    assert result.code == 1, result.stdout + result.stderr
    assert result.json["error"]["error_code"] == "backend_not_configured"
    assert result.json["workflow_id"] == "remote-image"
    assert result.json["metadata"]["attempts"] == 1
    assert result.stderr.splitlines()[-1].startswith("genhook run: backend_not_configured: ")


def test_workflows_show_matches_describe(genhook: Callable[..., CliResult], engine: Engine) -> None:
    """`genhook workflows show` prints the workflow's public description with enums filled."""
    result = genhook("workflows", "show", "product-image")
    assert result.code == 0
    shown = result.json
    assert shown == json.loads(json.dumps(engine.workflow("product-image").describe()))
    props = shown["input_schema"]["properties"]
    assert "lifestyle" in props["target_style"]["enum"]
    assert "instagram_feed" in props["target_platform"]["enum"]
    codes = {c["error_code"] for c in shown["error_codes"]}
    assert {"missing_field", "unknown_style", "unknown_platform", "invalid_callback_url"} <= codes


def test_workflows_list_and_backends_list(genhook: Callable[..., CliResult]) -> None:
    """`workflows list` names the shipped workflows; `backends list` shows procedural ready."""
    listed = {w["workflow_id"] for w in genhook("workflows", "list").json}
    assert {"product-image", "article-header", "user-hero", "onboarding-kit"} <= listed
    backends = {b["backend"]: b for b in genhook("backends", "list").json}
    assert backends["procedural"]["ready"] is True
    assert backends["procedural"]["kinds"] == ["image", "video"]


def test_help_is_there(genhook: Callable[..., CliResult]) -> None:
    """`genhook --help` and `genhook run --help` explain themselves."""
    assert "genhook run product-image" in genhook("--help").stdout
    assert "FILE_OR_JSON" in genhook("run", "--help").stdout


def example_of(help_text: str) -> str:
    """The example command of a help text, as a user would select it in a terminal."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("genhook run "))
    block = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line.strip())
    return "\n".join(block)


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]], ids=["genhook", "run"])
def test_help_example_survives_copy_and_paste(
    args: list[str], tmp_path: Path, genhook: Callable[..., CliResult]
) -> None:
    """The example in --help, pasted into a shell in an empty folder, runs and succeeds."""
    command = example_of(genhook(*args, env={"COLUMNS": "80"}).stdout)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    exe_dir = str(Path(sys.executable).parent)
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": exe_dir + os.pathsep + os.environ.get("PATH", "")},
    )
    assert proc.returncode == 0, command + "\n" + proc.stderr
    assert json.loads(proc.stdout)["status"] == "success"
    assert any((folder / "assets").iterdir())
