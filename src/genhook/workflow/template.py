"""Workflow templates: YAML in, a checked :class:`Workflow` out, every problem with its line.

Loading checks everything a run would otherwise trip over: the top-level shape, the input schema
(a JSON Schema whose ``x-enum-from: styles|platforms|video_platforms`` is filled from the
preset files, whose ``x-media: image`` fields are URLs of media genhook fetches, and which may
not declare a name reserved for the trigger envelope), ``additional_fields``, unknown node
kinds, unknown or missing parameters, literal values of the wrong type, references to fields,
nodes or outputs that do not exist, references whose type does not fit, and cycles.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

from genhook.config_values import duration_value, parse_duration
from genhook.contract.envelope import MAX_URL_LENGTH, RESERVED, SCHEMA_PROPERTIES
from genhook.errors import ERROR_SPECS, ErrorCode, TemplateError, TemplateProblem
from genhook.presets import Presets
from genhook.scheduling.spec import ScheduleSpec, check_fixed_inputs, check_schedules
from genhook.workflow.refs import Ref, find_refs, whole_ref
from genhook.workflow.registry import NodeRegistry
from genhook.workflow.types import compatible, describe, json_type
from genhook.workflow.yamlsrc import Located, YamlSyntaxError, load_located

ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
NODE_NAME = re.compile(r"^[A-Za-z_][\w-]*$")
TOP_KEYS = {
    "id",
    "version",
    "description",
    "external_id",
    "input",
    "additional_fields",
    "dedup",
    "timeout",
    "schedules",
    "nodes",
    "outputs",
}
ADDITIONAL_FIELDS = ("refuse", "ignore")
NODE_KEYS = {"kind", "with", "description"}
ENUM_SOURCES = {
    "styles": ErrorCode.UNKNOWN_STYLE,
    "platforms": ErrorCode.UNKNOWN_PLATFORM,
    "video_platforms": ErrorCode.UNKNOWN_PLATFORM,
}
MEDIA_KEY = "x-media"
"""An input property's media kind: its value is a URL that genhook fetches (media/fetch.py)."""
MEDIA_KINDS = ("image",)


@dataclass(frozen=True)
class NodeSpec:
    """One node of a template: its name, kind and raw (unresolved) parameters."""

    name: str
    kind: str
    params: dict[str, Any]
    deps: frozenset[str]


@dataclass(frozen=True)
class Dedup:
    """A template's ``dedup: {key: [field, ...], window: 1h}``."""

    key: tuple[str, ...]
    window: float  # seconds

    def key_of(self, trigger: dict[str, Any]) -> str:
        """The sha256 of the key fields' values (canonical JSON; a missing field is null)."""
        values = [trigger.get(name) for name in self.key]
        canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, eq=False)
class Workflow:
    """A checked template, ready to run."""

    id: str
    version: int
    description: str
    external_id: str | None
    input_schema: dict[str, Any]
    nodes: dict[str, NodeSpec]
    order: tuple[str, ...]
    outputs: dict[str, Any]
    source: str
    enum_codes: dict[str, ErrorCode] = field(default_factory=dict)
    additional_fields: str = "refuse"
    """``refuse``: a trigger field the input does not declare is ``unknown_field``; ``ignore``:
    it is dropped before the workflow sees it (for systems that send their whole record)."""
    dedup: Dedup | None = None
    """Deduplication: a trigger of the same service whose key fields equal a job's within the
    window returns that job instead of generating again."""
    media_inputs: dict[str, str] = field(default_factory=dict)
    """The input fields declared ``x-media`` (a URL of media genhook fetches), with their kind."""
    timeout: float | None = None
    """The run timeout (``timeout: 10m``), seconds: an attempt that runs longer fails
    ``timed_out``; None: no bound but the backends' own."""
    schedules: tuple[ScheduleSpec, ...] = ()
    """Its ``schedules`` (:mod:`genhook.scheduling`): cron times that fire it as a service."""

    @property
    def backend(self) -> str:
        """The backend its generate nodes name (the first one's; procedural when none)."""
        for name in self.order:
            spec = self.nodes[name]
            if spec.kind == "generate":
                backend = spec.params.get("backend", "procedural")
                return backend if isinstance(backend, str) else "procedural"
        return "procedural"

    def error_codes(self) -> list[dict[str, Any]]:
        """The error codes a trigger of this workflow can end with, documented."""
        codes = [
            ErrorCode.INVALID_JSON,
            ErrorCode.INVALID_BODY,
            ErrorCode.INVALID_TYPE,
            ErrorCode.INVALID_VALUE,
        ]
        if self.input_schema.get("required"):
            codes.insert(2, ErrorCode.MISSING_FIELD)
        if self.additional_fields == "refuse":
            codes.append(ErrorCode.UNKNOWN_FIELD)
        codes += sorted(set(self.enum_codes.values()), key=list(ErrorCode).index)
        codes.append(ErrorCode.INVALID_CALLBACK_URL)
        kinds = {spec.kind for spec in self.nodes.values()}
        if self.media_inputs:
            codes += [ErrorCode.INPUT_FETCH_FAILED, ErrorCode.INVALID_INPUT_MEDIA]
        if "generate" in kinds:
            codes += [
                ErrorCode.BACKEND_UNAVAILABLE,
                ErrorCode.BACKEND_TIMEOUT,
                ErrorCode.BACKEND_RATE_LIMITED,
                ErrorCode.BACKEND_ERROR,
                ErrorCode.BACKEND_REJECTED,
                ErrorCode.BACKEND_NOT_CONFIGURED,
            ]
        if any(
            spec.kind == "quality_check" and spec.params.get("on_fail") == "fail"
            for spec in self.nodes.values()
        ):
            codes.append(ErrorCode.QUALITY_CHECK_FAILED)
        if "export" in kinds:
            codes.append(ErrorCode.EXPORT_FAILED)
        if self.timeout is not None:
            codes.append(ErrorCode.TIMED_OUT)
        codes += [ErrorCode.CANCELLED, ErrorCode.DEADLINE_EXPIRED, ErrorCode.INTERNAL_ERROR]
        return [
            {
                "error_code": c.value,
                "description": ERROR_SPECS[c].description,
                "retryable": ERROR_SPECS[c].retryable,
            }
            for c in codes
        ]

    def published_schema(self) -> dict[str, Any]:
        """The whole trigger as JSON Schema: the input fields, then the envelope's reserved
        fields; with ``additionalProperties: false`` unless the template ignores extra fields."""
        schema = {
            **self.input_schema,
            "properties": {**self.input_schema["properties"], **SCHEMA_PROPERTIES},
        }
        if self.additional_fields == "refuse":
            schema["additionalProperties"] = False
        return schema

    def describe(self) -> dict[str, Any]:
        """The public description: what ``GET /v1/workflows/{id}`` and ``workflows show`` print."""
        return {
            "workflow_id": self.id,
            "version": self.version,
            "description": self.description,
            "external_id_field": self.external_id,
            "input_schema": self.published_schema(),
            "additional_fields": self.additional_fields,
            "dedup": None
            if self.dedup is None
            else {"key": list(self.dedup.key), "window_seconds": self.dedup.window},
            "timeout_seconds": self.timeout,
            "error_codes": self.error_codes(),
            "nodes": [{"name": n, "kind": self.nodes[n].kind} for n in self.order],
        }


class _Checker:
    """Collects problems with their lines while a template is checked."""

    def __init__(self, doc: Located) -> None:
        self.doc = doc
        self.problems: list[TemplateProblem] = []

    def add(self, path: tuple[str | int, ...], message: str) -> None:
        where = ".".join(str(p) for p in path) or "(file)"
        self.problems.append(TemplateProblem(where, self.doc.line(path), message))


def load_workflow(path: Path, presets: Presets, registry: NodeRegistry) -> Workflow:
    """Read and check one template file; raise :class:`TemplateError` listing every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(str(path), [TemplateProblem("(file)", None, str(exc))]) from exc
    return parse_workflow(text, str(path), presets, registry)


def parse_workflow(text: str, source: str, presets: Presets, registry: NodeRegistry) -> Workflow:
    """Check template ``text`` (named ``source`` in messages)."""
    try:
        doc = load_located(text)
    except YamlSyntaxError as exc:
        raise TemplateError(source, [TemplateProblem("(file)", exc.line, str(exc))]) from exc
    chk = _Checker(doc)
    for dup_path, line in doc.duplicates:
        chk.problems.append(TemplateProblem(".".join(map(str, dup_path)), line, "duplicate key"))
    data = doc.data
    if not isinstance(data, dict):
        chk.add((), "a template is a YAML mapping")
        raise TemplateError(source, chk.problems)
    for key in data:
        if key not in TOP_KEYS:
            chk.add((key,), f"unknown key (allowed: {', '.join(sorted(TOP_KEYS))})")
    wf_id = data.get("id")
    if not isinstance(wf_id, str) or not ID_PATTERN.match(wf_id):
        chk.add(("id",), "id must be a lowercase slug like 'product-image'")
    version = data.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        chk.add(("version",), "version must be a positive integer")
    description = data.get("description", "")
    if not isinstance(description, str):
        chk.add(("description",), "description must be text")
    schema, field_types, enum_codes = _check_input(chk, data.get("input"), presets)
    external_id = data.get("external_id")
    if external_id is not None and external_id not in field_types:
        chk.add(("external_id",), f"external_id names no input field: {external_id!r}")
    additional = data.get("additional_fields", "refuse")
    if additional not in ADDITIONAL_FIELDS:
        chk.add(
            ("additional_fields",),
            f"additional_fields must be one of {', '.join(ADDITIONAL_FIELDS)} (default refuse)",
        )
    dedup = _check_dedup(chk, data.get("dedup"), field_types)
    timeout = _check_timeout(chk, data.get("timeout"))
    nodes = _check_nodes(chk, data.get("nodes"), field_types, registry, presets)
    _check_media_wiring(chk, nodes, schema)
    order = _order(chk, nodes)
    outputs = _check_outputs(chk, data.get("outputs"), field_types, nodes, registry)
    schedules = check_schedules(chk.add, data.get("schedules"), str(wf_id), Path(source).parent)
    if chk.problems:
        raise TemplateError(source, chk.problems)
    workflow = Workflow(
        id=str(wf_id),
        version=int(version),
        description=str(description).strip(),
        external_id=external_id,
        input_schema=schema,
        nodes=nodes,
        order=order,
        outputs=outputs,
        source=source,
        enum_codes=enum_codes,
        additional_fields=str(additional),
        dedup=dedup,
        timeout=timeout,
        media_inputs={
            name: str(prop[MEDIA_KEY])
            for name, prop in schema.get("properties", {}).items()
            if isinstance(prop, dict) and MEDIA_KEY in prop
        },
        schedules=schedules,
    )
    check_fixed_inputs(chk.add, workflow)  # each fixed input is a valid trigger of it
    if chk.problems:
        raise TemplateError(source, chk.problems)
    return workflow


MAX_TIMEOUT = 86400.0
"""The longest run timeout a template may set (a day)."""


def _check_timeout(chk: _Checker, raw: Any) -> float | None:
    """``timeout: DURATION`` (``90s``, ``10m``, or seconds): more than 0, at most a day."""
    if raw is None:
        return None
    try:
        seconds = duration_value(raw)
    except ValueError as exc:
        chk.add(("timeout",), str(exc))
        return None
    if not 0 < seconds <= MAX_TIMEOUT:
        chk.add(("timeout",), "timeout must be more than 0 and at most 24h")
        return None
    return seconds


def _check_dedup(chk: _Checker, raw: Any, field_types: dict[str, Any]) -> Dedup | None:
    """``dedup: {key: [input fields], window: DURATION}`` (window default 24h, at most 30d)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"key", "window"}:
        chk.add(("dedup",), "dedup must be a mapping of key (a list of input fields) and window")
        return None
    key = raw.get("key")
    if isinstance(key, str):
        key = [key]
    if not isinstance(key, list) or not key or not all(isinstance(k, str) for k in key):
        chk.add(("dedup", "key"), "dedup.key must be a non-empty list of input field names")
        return None
    for name in key:
        if name not in field_types:
            chk.add(("dedup", "key"), f"dedup.key names no input field: {name!r}")
    try:
        window = parse_duration(str(raw.get("window", "24h")))
    except ValueError as exc:
        chk.add(("dedup", "window"), str(exc))
        return None
    if not 0 < window <= 30 * 86400:
        chk.add(("dedup", "window"), "dedup.window must be more than 0 and at most 30d")
        return None
    return Dedup(tuple(key), window)


def _check_input(
    chk: _Checker, raw: Any, presets: Presets
) -> tuple[dict[str, Any], dict[str, Any], dict[str, ErrorCode]]:
    if not isinstance(raw, dict) or not isinstance(raw.get("properties"), dict):
        chk.add(("input",), "input must be a JSON Schema object with 'properties'")
        return {}, {}, {}
    schema: dict[str, Any] = {"type": "object", **raw}
    props: dict[str, Any] = dict(schema["properties"])
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        chk.add(("input", "required"), "required must be a list of field names")
        required = []
    for name in required:
        if name not in props:
            chk.add(("input", "required"), f"required field {name!r} is not in properties")
    if "additionalProperties" in schema:
        chk.add(
            ("input", "additionalProperties"),
            "use the template's additional_fields (refuse or ignore) instead",
        )
    enum_codes: dict[str, ErrorCode] = {}
    types: dict[str, Any] = {}
    for name, prop in props.items():
        where = ("input", "properties", name)
        if name in RESERVED:
            chk.add(
                where,
                f"{name!r} is reserved for the trigger envelope ({', '.join(RESERVED)}): "
                "a workflow never sees it; name the field otherwise",
            )
            continue
        if not isinstance(prop, dict):
            chk.add(where, "a property is a JSON Schema mapping")
            continue
        prop = dict(prop)
        source = prop.pop("x-enum-from", None)
        if source is not None:
            if source not in ENUM_SOURCES:
                chk.add((*where, "x-enum-from"), f"x-enum-from must be one of {list(ENUM_SOURCES)}")
            else:
                values = (
                    list(presets.styles)
                    if source == "styles"
                    else presets.video_targets
                    if source == "video_platforms"
                    else presets.platform_targets
                )
                prop = {"type": "string", **prop, "enum": values}
                enum_codes[name] = ENUM_SOURCES[source]
        if MEDIA_KEY in prop:
            prop = _media_property(chk, where, prop)
        props[name] = prop
        optional = name not in required and "default" not in prop
        types[name] = json_type(prop, optional=optional)
    schema["properties"] = props
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = ("input", *[str(p) for p in exc.path])
        chk.add(path, f"invalid JSON Schema: {exc.message}")
    return schema, types, enum_codes


def _media_property(
    chk: _Checker, where: tuple[str | int, ...], prop: dict[str, Any]
) -> dict[str, Any]:
    """An ``x-media`` input: a string in ``format: uri`` (both filled in when not written), at
    most :data:`~genhook.contract.envelope.MAX_URL_LENGTH` characters unless the template says
    less; its value is checked at trigger time as a URL genhook may fetch."""
    kind = prop[MEDIA_KEY]
    if kind not in MEDIA_KINDS:
        chk.add((*where, MEDIA_KEY), f"{MEDIA_KEY} must be one of {list(MEDIA_KINDS)}")
    if prop.get("type", "string") != "string":
        chk.add((*where, "type"), f"an {MEDIA_KEY} input is a URL: its type is string")
    if prop.get("format", "uri") != "uri":
        chk.add((*where, "format"), f"an {MEDIA_KEY} input is a URL: its format is uri")
    for key in ("enum", "const"):
        if key in prop:
            chk.add((*where, key), f"an {MEDIA_KEY} input takes any URL: no {key}")
    return {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH, **prop}


def _check_media_wiring(chk: _Checker, nodes: dict[str, NodeSpec], schema: dict[str, Any]) -> None:
    """A generate node's ``inputs`` each wire one ``x-media`` input field, ``${input.FIELD}``:
    only those URLs were checked when the trigger came (the fetch checks again regardless)."""
    props = schema.get("properties", {})
    media = [n for n, p in props.items() if isinstance(p, dict) and MEDIA_KEY in p]
    for spec in nodes.values():
        wired = spec.params.get("inputs")
        if spec.kind != "generate" or wired is None:
            continue
        where: tuple[str | int, ...] = ("nodes", spec.name, "with", "inputs")
        if not isinstance(wired, dict):
            chk.add(where, "inputs maps a name to ${input.FIELD}, an x-media input field")
            continue
        for key, value in wired.items():
            ref = whole_ref(value)
            if ref is None or ref.source != "input" or ref.name not in media:
                fields = ", ".join(media) or f"none: declare one with {MEDIA_KEY}: image"
                chk.add(
                    (*where, key),
                    f"an input is one ${{input.FIELD}} of an {MEDIA_KEY} field (fields: {fields})",
                )


def _check_nodes(
    chk: _Checker,
    raw: Any,
    field_types: dict[str, Any],
    registry: NodeRegistry,
    presets: Presets,
) -> dict[str, NodeSpec]:
    if not isinstance(raw, dict) or not raw:
        chk.add(("nodes",), "nodes must be a non-empty mapping of name -> node")
        return {}
    specs: dict[str, NodeSpec] = {}
    for name, body in raw.items():
        where: tuple[str | int, ...] = ("nodes", name)
        if not isinstance(name, str) or not NODE_NAME.match(name) or name == "input":
            chk.add(where, "node names are identifiers and 'input' is reserved")
            continue
        if not isinstance(body, dict):
            chk.add(where, "a node is a mapping with 'kind' and 'with'")
            continue
        for key in body:
            if key not in NODE_KEYS:
                chk.add((*where, key), f"unknown key (allowed: {', '.join(sorted(NODE_KEYS))})")
        kind = body.get("kind")
        params = body.get("with") or {}
        if not isinstance(params, dict):
            chk.add((*where, "with"), "'with' is a mapping of parameter -> value")
            params = {}
        if not isinstance(kind, str) or registry.get(kind) is None:
            chk.add((*where, "kind"), f"unknown node kind {kind!r} (known: {registry.kinds()})")
            continue
        deps = frozenset(r.source for r in find_refs(params) if r.source != "input")
        specs[name] = NodeSpec(name=name, kind=kind, params=params, deps=deps)
    for spec in specs.values():
        _check_params(chk, spec, specs, field_types, registry, presets)
    return specs


def _source_type(
    chk: _Checker,
    where: tuple[str | int, ...],
    ref: Ref,
    specs: dict[str, NodeSpec],
    field_types: dict[str, Any],
    registry: NodeRegistry,
) -> tuple[bool, Any]:
    """Check that ``ref`` points somewhere; return (found, its type)."""
    if ref.source == "input":
        if ref.name not in field_types:
            chk.add(where, f"{ref} names no input field")
            return False, None
        return True, field_types[ref.name]
    spec = specs.get(ref.source)
    node = registry.get(spec.kind) if spec else None
    if spec is None or node is None:
        chk.add(where, f"{ref} names no node")
        return False, None
    if ref.name not in node.outputs:
        chk.add(where, f"{ref}: a {spec.kind} node has outputs {sorted(node.outputs)}")
        return False, None
    return True, node.outputs[ref.name]


def _check_params(
    chk: _Checker,
    spec: NodeSpec,
    specs: dict[str, NodeSpec],
    field_types: dict[str, Any],
    registry: NodeRegistry,
    presets: Presets,
) -> None:
    node = registry.get(spec.kind)
    assert node is not None
    fields = node.Params.model_fields
    base: tuple[str | int, ...] = ("nodes", spec.name, "with")
    for pname, value in spec.params.items():
        where = (*base, pname)
        if pname not in fields:
            chk.add(where, f"unknown parameter of {spec.kind} (has: {', '.join(fields)})")
            continue
        target: Any = fields[pname].annotation
        ref = whole_ref(value)
        if ref is not None:
            if ref.source == spec.name:
                chk.add(where, f"{ref}: a node cannot wire to itself")
                continue
            found, source_type = _source_type(chk, where, ref, specs, field_types, registry)
            if found and not compatible(source_type, target):
                chk.add(
                    where,
                    f"{ref} gives {describe(source_type)} but {pname} takes {describe(target)}",
                )
            continue
        refs = list(find_refs(value))
        for inner in refs:
            if inner.source == spec.name:
                chk.add(where, f"{inner}: a node cannot wire to itself")
            else:
                _source_type(chk, where, inner, specs, field_types, registry)
        if not refs:
            try:
                adapter: TypeAdapter[Any] = TypeAdapter(target)
            except PydanticSchemaGenerationError:  # pixels, clips: only another node gives them
                chk.add(
                    where,
                    f"{pname} takes {describe(target)} from another node "
                    "(${node.output}), not a value written here",
                )
                continue
            try:
                adapter.validate_python(value)
            except ValidationError as exc:
                chk.add(where, f"invalid value: {exc.errors()[0]['msg']}")
    for pname, info in fields.items():
        if info.is_required() and pname not in spec.params:
            chk.add(("nodes", spec.name), f"missing parameter {pname!r}")
    for pname, message in node.check(spec.params, presets):
        chk.add((*base, pname), message)


def _order(chk: _Checker, specs: dict[str, NodeSpec]) -> tuple[str, ...]:
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for spec in specs.values():
        sorter.add(spec.name, *[d for d in spec.deps if d in specs])
    try:
        return tuple(sorter.static_order())
    except CycleError as exc:
        cycle = list(exc.args[1])
        chk.add(("nodes", cycle[0]), "cycle: " + " -> ".join(cycle))
        return ()


def _check_outputs(
    chk: _Checker,
    raw: Any,
    field_types: dict[str, Any],
    specs: dict[str, NodeSpec],
    registry: NodeRegistry,
) -> dict[str, Any]:
    if not isinstance(raw, dict) or "assets" not in raw:
        chk.add(("outputs",), "outputs must be a mapping with 'assets' (and optionally 'seo')")
        return {}
    assets = raw["assets"] if isinstance(raw["assets"], list) else [raw["assets"]]
    for i, item in enumerate(assets):
        ref = whole_ref(item)
        if ref is None:
            chk.add(("outputs", "assets", i), "each asset entry is one ${node.output} reference")
        else:
            _source_type(chk, ("outputs", "assets", i), ref, specs, field_types, registry)
    seo = raw.get("seo")
    if seo is not None:
        ref = whole_ref(seo)
        if ref is None:
            chk.add(("outputs", "seo"), "seo is one ${node.output} reference")
        else:
            _source_type(chk, ("outputs", "seo"), ref, specs, field_types, registry)
    for key in raw:
        if key not in {"assets", "seo"}:
            chk.add(("outputs", key), "unknown key (allowed: assets, seo)")
    return {"assets": assets, "seo": seo}
