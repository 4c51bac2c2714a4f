"""The workshop.yaml reference and JSON Schema, generated from the model so they cannot drift."""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import BaseModel

from bakery.config.messages import inner_model
from bakery.config.workshop import Workshop

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"

HEADER = """\
# workshop.yaml reference

<!-- Generated from bakery/config/ by `bakery schema --markdown`; do not edit by hand.
     tests/test_reference.py fails when this file is stale. -->

Every key is optional except `name`; unknown keys are errors. `bakery config show FILE` prints a
file with every default filled in; `bakery schema` prints the JSON Schema for editors (e.g. the
YAML language server: `# yaml-language-server: $schema=workshop.schema.json`).

Quote values that YAML 1.1 would read as something else: `'no'`, `'0644'`, `'2024'`.
"""


def json_schema() -> dict[str, Any]:
    """The JSON Schema of workshop.yaml (draft 2020-12)."""
    schema = Workshop.model_json_schema()
    return {"$schema": SCHEMA_URI, **schema, "title": "bakery workshop.yaml"}


def schema_text() -> str:
    """The JSON Schema as ``bakery schema`` prints it."""
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


def effective_config(cfg: Workshop) -> str:
    """``cfg`` as YAML with every default filled in (``bakery config show``)."""
    data = cfg.model_dump(mode="json", by_alias=True)
    if not cfg.cluster.swarm:  # the swarm's keys are refused without it (config.Cluster)
        data["cluster"] = {"engine": cfg.cluster.engine}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "anyOf" in prop:
        kinds = [_type(p, defs) for p in prop["anyOf"] if p.get("type") != "null"]
        return " or ".join(dict.fromkeys(kinds))
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "object":
        return f"mapping of string to {_type(prop.get('additionalProperties', {}), defs)}"
    bounds = [
        f"{op} {prop[key]}"
        for key, op in (
            ("minimum", ">="),
            ("exclusiveMinimum", ">"),
            ("maximum", "<="),
            ("exclusiveMaximum", "<"),
        )
        if key in prop
    ]
    return f"{kind} ({', '.join(bounds)})" if bounds else str(kind)


def _default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    shown = json.dumps(value) if not isinstance(value, str) else value
    return f"`{shown}`" if shown not in ("null", "") else "none"


def _rule(prop: dict[str, Any]) -> str:
    rule = prop.get("$comment") or prop.get("items", {}).get("$comment")
    return f" Rule: {rule}." if rule else ""


def _section(model: type[BaseModel], title: str, defs: dict[str, Any]) -> list[str]:
    schema = defs.get(model.__name__, {}) if model is not Workshop else Workshop.model_json_schema()
    props = schema.get("properties", {})
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    lines = [f"## {title}", "", doc, "", "| key | type | default | description |"]
    lines.append("|---|---|---|---|")
    for name, field in model.model_fields.items():
        key = field.alias or name  # `from` (a Python keyword) is an alias
        prop = props.get(key, {})
        text = (prop.get("description", "") + _rule(prop)).replace("|", "\\|")
        lines.append(f"| `{key}` | {_type(prop, defs)} | {_default(model, name)} | {text} |")
    return [*lines, ""]


def _models() -> list[tuple[type[BaseModel], str]]:
    """Every model of the workshop, depth first, with its YAML path."""
    out: list[tuple[type[BaseModel], str]] = []
    todo: list[tuple[type[BaseModel], str]] = [(Workshop, "")]
    while todo:
        model, path = todo.pop(0)
        if any(m is model for m, _ in out):
            continue
        out.append((model, path))
        for name, field in model.model_fields.items():
            inner = inner_model(field.annotation)
            if inner is not None:
                item = "[]" if "list" in str(field.annotation) else ""
                todo.append((inner, f"{path}.{name}{item}".lstrip(".")))
    return out


def markdown() -> str:
    """docs/reference.md: one table per section of workshop.yaml."""
    defs = Workshop.model_json_schema()["$defs"]
    lines = [HEADER]
    for model, path in _models():
        title = f"`{path}`: {model.__name__}" if path else "Top level: Workshop"
        lines += [f'<a id="{model.__name__.lower()}"></a>', "", *_section(model, title, defs)]
    return "\n".join(lines).rstrip("\n") + "\n"
