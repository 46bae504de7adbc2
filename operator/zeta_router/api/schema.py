"""Pydantic JSON Schema -> a structural OpenAPI v3 schema, as a Kubernetes 1.20+ CRD accepts it.

What changes (see Kubernetes' "structural schema" rules):

- ``$ref`` is inlined (the models have no recursion); ``$defs`` and ``title`` are dropped.
- ``anyOf: [X, {type: null}]`` (an optional field) becomes ``X``: leaving the field out is how
  a manifest says "none". (``nullable: true`` would also admit an explicit ``null``, but
  Kubernetes 1.20 then publishes the field without a type, and ``kubectl explain`` and
  client-side validation lose it.)
- ``additionalProperties: false`` (pydantic's ``extra="forbid"``) is dropped: the apiserver
  prunes unknown fields, and a structural schema may not set it beside ``properties``.
- A free-form object (``dict[str, Any]``) becomes ``type: object`` with
  ``x-kubernetes-preserve-unknown-fields: true``; a quantity keeps its
  ``x-kubernetes-int-or-string: true`` and nothing else.
- JSON Schema 2020's numeric ``exclusiveMinimum: N`` becomes OpenAPI 3.0's ``minimum: N`` +
  ``exclusiveMinimum: true`` (same for the maximum); ``const`` becomes a one-value ``enum``.
- ``default`` is not emitted (the apiserver would store defaults in every object, and several
  defaults depend on other fields); a simple default is appended to the field's description
  instead ("Default: `30s`."), where ``kubectl explain`` and the reference show it. The models
  apply the defaults when the operator parses an object.

The output is plain dicts with a fixed key order, so its YAML is byte-for-byte stable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

# Key order of every emitted node: what a reader looks for first comes first.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "required",
    "items",
    "additionalProperties",
    "properties",
)


class SchemaError(ValueError):
    """The JSON Schema uses something this converter does not translate."""


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model (validation mode, camelCase)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return to_structural(raw, raw.get("$defs", {}))


def to_structural(node: Mapping[str, Any], defs: Mapping[str, Any]) -> dict[str, Any]:
    """Convert one JSON Schema node (and everything under it); ``defs`` resolves ``$ref``."""
    node = _inline(node, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise SchemaError(f"unsupported anyOf {node['anyOf']}")
        merged = dict(_inline(options[0], defs))
        for k, v in node.items():
            if k != "anyOf":
                merged.setdefault(k, v)
        if "description" in node:
            merged["description"] = node["description"]
        node = merged

    out: dict[str, Any] = {}
    description = _description(node)
    if description:
        out["description"] = description
    if node.get("x-kubernetes-int-or-string"):
        out["x-kubernetes-int-or-string"] = True
        return _ordered(out)

    kind = node.get("type")
    if kind is None:
        # Any value (pydantic's ``Any``): only meaningful as a free-form object here.
        out["type"] = "object"
        out["x-kubernetes-preserve-unknown-fields"] = True
        return _ordered(out)
    if not isinstance(kind, str):
        raise SchemaError(f"unsupported type {kind!r}")
    out["type"] = kind

    for key in ("format", "pattern", "minLength", "maxLength", "minItems", "maxItems"):
        if key in node:
            out[key] = node[key]
    if "enum" in node:
        out["enum"] = list(node["enum"])
    elif "const" in node:
        out["enum"] = [node["const"]]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if exclusive in node and not isinstance(node[exclusive], bool):
            out[bound] = node[exclusive]
            out[exclusive] = True
        elif bound in node:
            out[bound] = node[bound]

    if kind == "array":
        items = node.get("items")
        if not isinstance(items, Mapping):
            raise SchemaError("arrays need one item schema")
        out["items"] = to_structural(items, defs)
    elif kind == "object":
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if props:
            out["properties"] = {k: to_structural(v, defs) for k, v in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        elif isinstance(extra, Mapping) and extra:
            out["additionalProperties"] = to_structural(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    return _ordered(out)


def _inline(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    name = str(ref).rsplit("/", 1)[-1]
    if name not in defs:
        raise SchemaError(f"unresolved $ref {ref}")
    merged = dict(defs[name])
    for k, v in node.items():
        if k != "$ref":
            merged[k] = v
    return _inline(merged, defs)


def _description(node: Mapping[str, Any]) -> str:
    text = " ".join(str(node.get("description") or "").split())
    default = node.get("default")
    if default is not None and default != [] and default != {}:
        shown = default if isinstance(default, str) else json.dumps(default)
        if f"Default: `{shown}`" not in text:
            text = f"{text} Default: `{shown}`." if text else f"Default: `{shown}`."
    return text


def _ordered(out: dict[str, Any]) -> dict[str, Any]:
    return {k: out[k] for k in _KEY_ORDER if k in out}
