"""Template loading: shipped templates load; every kind of breakage is refused with its line."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from genhook.contract.envelope import RESERVED
from genhook.errors import TemplateError
from genhook.presets import Presets
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.template import parse_workflow

GOOD = textwrap.dedent(
    """\
    id: tiny
    version: 1
    description: a small valid template
    external_id: item_id
    input:
      required: [item_id, name, target_style, target_platform]
      properties:
        item_id: {type: string}
        name: {type: string}
        count: {type: integer, default: 1}
        target_style: {x-enum-from: styles}
        target_platform: {x-enum-from: platforms}
    nodes:
      style:
        kind: style_preset
        with:
          style: ${input.target_style}
      prompt:
        kind: prompt_builder
        with:
          template: "photo of {{ input.name }}, {{ style.prompt }}"
          vars:
            style: ${style.preset}
      image:
        kind: generate
        with:
          prompt: ${prompt.prompt}
          width: 256
          height: 256
      export:
        kind: export
        with:
          image: ${image.image}
          platforms: ${input.target_platform}
    outputs:
      assets:
        - ${export.assets}
    """
)


def load(text: str, presets: Presets, nodes: NodeRegistry) -> object:
    return parse_workflow(text, "t.yaml", presets, nodes)


def problems(text: str, presets: Presets, nodes: NodeRegistry) -> list[tuple[int | None, str]]:
    with pytest.raises(TemplateError) as info:
        load(text, presets, nodes)
    return [(p.line, p.message) for p in info.value.problems]


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_good_template_loads(presets: Presets, nodes: NodeRegistry) -> None:
    """A valid template loads with enums filled from the preset files; the workflow's input
    holds no envelope field, while the published schema lists the envelope and refuses extras."""
    wf = parse_workflow(GOOD, "t.yaml", presets, nodes)
    props = wf.input_schema["properties"]
    assert props["target_style"]["enum"] == list(presets.styles)
    assert "social_pack" in props["target_platform"]["enum"]
    assert not set(RESERVED) & set(props)
    assert wf.additional_fields == "refuse"
    published = wf.describe()["input_schema"]
    assert published["properties"]["callback_url"]["format"] == "uri"
    assert set(RESERVED) <= set(published["properties"])
    assert published["additionalProperties"] is False
    assert "unknown_field" in {c["error_code"] for c in wf.describe()["error_codes"]}
    assert wf.order.index("style") < wf.order.index("prompt") < wf.order.index("image")


def test_additional_fields_ignore(presets: Presets, nodes: NodeRegistry) -> None:
    """`additional_fields: ignore` loads; the published schema then allows extra fields."""
    wf = parse_workflow(GOOD + "additional_fields: ignore\n", "t.yaml", presets, nodes)
    assert wf.additional_fields == "ignore"
    assert "additionalProperties" not in wf.describe()["input_schema"]
    assert "unknown_field" not in {c["error_code"] for c in wf.describe()["error_codes"]}


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_names_cannot_be_inputs(name: str, presets: Presets, nodes: NodeRegistry) -> None:
    """Every envelope name is refused as an input property, with its line."""
    text = GOOD.replace(
        "    item_id: {type: string}\n",
        f"    item_id: {{type: string}}\n    {name}: {{type: string}}\n",
    )
    found = problems(text, presets, nodes)
    assert any(
        "reserved for the trigger envelope" in msg and line == line_of(text, f"{name}:")
        for line, msg in found
    ), found


def test_a_template_cannot_read_the_callback_url(presets: Presets, nodes: NodeRegistry) -> None:
    """`${input.callback_url}` names no input field: the envelope is not the workflow's."""
    text = GOOD.replace("prompt: ${prompt.prompt}", "prompt: ${input.callback_url}")
    found = problems(text, presets, nodes)
    assert any("names no input field" in msg for _, msg in found), found


def test_shipped_templates_all_load(engine: object) -> None:
    """Every template in workflows/ loads and checks."""
    from genhook.engine import Engine

    assert isinstance(engine, Engine)
    assert set(engine.workflows) >= {
        "product-image",
        "article-header",
        "user-hero",
        "onboarding-kit",
    }


Mutation = Callable[[str], str]

CASES: list[tuple[str, Mutation, str, str]] = [
    (
        "unknown node kind",
        lambda t: t.replace("kind: prompt_builder", "kind: prompt_bilder"),
        "kind: prompt_bilder",
        "unknown node kind",
    ),
    (
        "unknown parameter",
        lambda t: t.replace("width: 256", "widht: 256"),
        "widht: 256",
        "unknown parameter",
    ),
    (
        "mistyped literal",
        lambda t: t.replace("height: 256", "height: tall"),
        "height: tall",
        "invalid value",
    ),
    (
        "missing parameter",
        lambda t: t.replace("      prompt: ${prompt.prompt}\n", ""),
        "  image:",
        "missing parameter 'prompt'",
    ),
    (
        "wiring to an unknown node",
        lambda t: t.replace("${prompt.prompt}", "${promt.prompt}"),
        "${promt.prompt}",
        "names no node",
    ),
    (
        "wiring to an unknown output",
        lambda t: t.replace("${image.image}", "${image.picture}"),
        "${image.picture}",
        "has outputs",
    ),
    (
        "wiring to an unknown input field",
        lambda t: t.replace("${input.target_style}", "${input.style}"),
        "${input.style}",
        "names no input field",
    ),
    (
        "wiring of the wrong type",
        lambda t: t.replace("prompt: ${prompt.prompt}", "prompt: ${input.count}"),
        "prompt: ${input.count}",
        "gives int but prompt takes str",
    ),
    (
        "unknown literal preset",
        lambda t: t.replace("platforms: ${input.target_platform}", "platforms: myspace"),
        "platforms: myspace",
        "unknown platform presets",
    ),
    (
        "template with undefined variable",
        lambda t: t.replace("{{ input.name }}", "{{ nam }}"),
        "template: ",
        "undefined variables ['nam']",
    ),
    (
        "template syntax error",
        lambda t: t.replace("{{ input.name }}", "{{ input.name }"),
        "template: ",
        "template syntax error",
    ),
    (
        "unknown enum source",
        lambda t: t.replace("{x-enum-from: styles}", "{x-enum-from: colours}"),
        "target_style: {x-enum-from: colours}",
        "x-enum-from must be one of",
    ),
    (
        "required field not in properties",
        lambda t: t.replace("required: [item_id,", "required: [sku, item_id,"),
        "required: [sku",
        "'sku' is not in properties",
    ),
    (
        "external_id names no field",
        lambda t: t.replace("external_id: item_id", "external_id: sku"),
        "external_id: sku",
        "names no input field",
    ),
    (
        "duplicate key",
        lambda t: t.replace("      width: 256\n", "      width: 256\n      width: 512\n"),
        "width: 512",
        "duplicate key",
    ),
    (
        "additional_fields with an unknown value",
        lambda t: t + "additional_fields: allow\n",
        "additional_fields: allow",
        "additional_fields must be one of refuse, ignore",
    ),
    (
        "additionalProperties in the input schema",
        lambda t: t.replace("  properties:\n", "  additionalProperties: false\n  properties:\n", 1),
        "additionalProperties: false",
        "use the template's additional_fields",
    ),
    (
        "unknown top-level key",
        lambda t: t + "outptus: []\n",
        "outptus",
        "unknown key",
    ),
]


@pytest.mark.parametrize(("name", "mutate", "needle", "message"), CASES, ids=[c[0] for c in CASES])
def test_broken_template_is_refused_with_its_line(
    name: str, mutate: Mutation, needle: str, message: str, presets: Presets, nodes: NodeRegistry
) -> None:
    """Each breakage is reported with the line of the offending text."""
    text = mutate(GOOD)
    assert text != GOOD, name
    found = problems(text, presets, nodes)
    expected_line = line_of(text, needle)
    assert any(message in msg and line == expected_line for line, msg in found), found


def test_cycle_is_refused(presets: Presets, nodes: NodeRegistry) -> None:
    """Nodes wired in a circle are refused, naming the cycle."""
    text = GOOD.replace(
        'template: "photo of {{ input.name }}, {{ style.prompt }}"',
        'template: "photo of {{ input.name }} {{ w }}"',
    ).replace("style: ${style.preset}", "style: ${style.preset}\n        w: ${image.image}")
    text = text.replace("width: 256", "width: 256\n      negative_prompt: ${prompt.prompt}")
    found = problems(text, presets, nodes)
    assert any("cycle" in msg for _, msg in found), found


def test_yaml_syntax_error_has_line(presets: Presets, nodes: NodeRegistry) -> None:
    """Text that is not YAML is refused with the parser's line."""
    text = GOOD.replace("      width: 256", "      width: [256")
    found = problems(text, presets, nodes)
    assert found[0][0] is not None and found[0][0] >= line_of(text, "width: [256")


def test_validate_command_prints_file_and_line(
    tmp_path: Path, genhook: Callable[..., object]
) -> None:
    """`genhook workflows validate` exits 2 and prints FILE:LINE for a broken template."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("kind: export", "kind: exprot"), encoding="utf-8")
    good = tmp_path / "good.yaml"
    good.write_text(GOOD, encoding="utf-8")
    result = genhook("workflows", "validate", str(good), str(bad))
    assert result.code == 2  # type: ignore[attr-defined]
    assert f"{bad}:{line_of(GOOD, 'kind: export')}:" in result.stderr  # type: ignore[attr-defined]
    assert "good.yaml: ok" in result.stdout  # type: ignore[attr-defined]
