"""The generated CRD: equal to the checked-in copies, structural, stable; and the generated docs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from zeta_router.api.crd import build_crd, crd_yaml, openapi_schema, structural_problems
from zeta_router.api.models import ZetaRouterSpec, ZetaRouterStatus
from zeta_router.api.reference import (
    README_BEGIN,
    README_END,
    MissingMarkersError,
    render_reference,
    splice_readme,
)
from zeta_router.api.schema import SchemaError, to_structural
from zeta_router.cli import main

REPO = Path(__file__).resolve().parents[2]
CHECKED_IN = [REPO / "crds" / "zetarouter.yaml", REPO / "charts/zeta-router/crds/zetarouter.yaml"]
DOCS = REPO / "docs" / "api.md"

# Where free-form objects are intended; anywhere else an unknown field must be pruned.
FREE_FORM = {
    "spec.tiers[].env[].valueFrom",
    "spec.tiers[].readinessProbe",
    "spec.tiers[].modelCache",
    "spec.tiers[].affinity",
    "spec.tiers[].topologySpreadConstraints[]",
    "status.loopState",
}


def walk(node: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), Mapping):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from walk(node["additionalProperties"], f"{path}.*")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return openapi_schema()


@pytest.mark.parametrize("path", CHECKED_IN, ids=lambda p: str(p.relative_to(REPO)))
def test_checked_in_crd_is_the_generated_one(path: Path) -> None:
    assert path.read_text(encoding="utf-8") == crd_yaml(), (
        f"{path.relative_to(REPO)} is out of date: run `make crd`"
    )


def test_generation_is_stable_and_round_trips() -> None:
    first = crd_yaml()
    assert crd_yaml() == first
    assert yaml.safe_load(first) == build_crd()


def test_crd_identity() -> None:
    crd = build_crd()
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "zetarouters.zeta.ai"
    assert spec["group"] == "zeta.ai"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == "zetarouters"
    assert spec["names"]["kind"] == "ZetaRouter"
    assert spec["names"]["shortNames"] == ["zr"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns_read_fields_the_status_has(schema: dict[str, Any]) -> None:
    (version,) = build_crd()["spec"]["versions"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Tiers", "Thresholds", "Ready", "Age"]
    status = schema["properties"]["status"]["properties"]
    for name in ("Tiers", "Thresholds"):
        field = columns[name].removeprefix(".status.")
        assert field in status, name
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert "status" in status["conditions"]["items"]["properties"]


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    assert structural_problems(schema) == []


def test_schema_has_no_json_schema_leftovers() -> None:
    text = crd_yaml()
    for leftover in ("$ref", "$defs", "anyOf", "allOf", "oneOf"):
        assert leftover not in text, leftover
    for path, node in walk(openapi_schema()):
        for key in ("title", "default", "const", "examples"):
            assert key not in node, (path, key)
        assert node.get("additionalProperties") is not False, path
        assert node.get("type") != "null", path
        assert "nullable" not in node, path


def test_free_form_only_where_intended(schema: dict[str, Any]) -> None:
    free = {p for p, n in walk(schema) if n.get("x-kubernetes-preserve-unknown-fields")}
    assert free == FREE_FORM


def test_quantities_are_int_or_string(schema: dict[str, Any]) -> None:
    nodes = dict(walk(schema))
    for path in (
        "spec.tiers[].resources.limits.*",
        "spec.tiers[].resources.requests.*",
        "spec.router.resources.limits.*",
    ):
        assert nodes[path] == {"x-kubernetes-int-or-string": True}, path


def test_schema_covers_types_enums_and_ranges(schema: dict[str, Any]) -> None:
    nodes = dict(walk(schema))
    assert nodes["spec"]["required"] == ["tiers"]
    assert nodes["spec.tiers"]["minItems"] == 1
    # (model is required of the tiers the operator runs only: an external tier has none)
    assert nodes["spec.tiers[]"]["required"] == ["name"]
    assert nodes["spec.tiers[].external"]["required"] == ["baseUrl", "model", "apiKeySecretRef"]
    assert nodes["spec.tiers[].engine"]["enum"] == ["vllm", "llamacpp"]
    assert nodes["spec.autoscaling.mode"]["enum"] == ["apply", "advisory"]
    rate = nodes["spec.router.shadowSampleRate"]
    assert (rate["type"], rate["minimum"], rate["maximum"]) == ("number", 0.0, 1.0)
    cut = nodes["spec.router.contexts[].thresholds[]"]
    assert (cut["minimum"], cut["maximum"]) == (0.0, 1.0)
    port = nodes["spec.tiers[].port"]
    assert (port["type"], port["minimum"], port["maximum"]) == ("integer", 1, 65535)
    cost = nodes["spec.tiers[].costWeight"]
    assert (cost["minimum"], cost["exclusiveMinimum"]) == (0.0, True)
    assert nodes["spec.tiers[].name"]["pattern"] == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    assert nodes["spec.tiers[].replicas.max"]["type"] == "integer"
    assert nodes["status.thresholds.*"]["items"]["type"] == "number"


def test_every_model_field_is_in_the_schema_with_a_description(schema: dict[str, Any]) -> None:
    nodes = dict(walk(schema))
    for top, model in (("spec", ZetaRouterSpec), ("status", ZetaRouterStatus)):
        for name, info in model.model_fields.items():
            node = nodes[f"{top}.{info.alias or name}"]
            assert node.get("description"), name
    tier = nodes["spec.tiers[]"]["properties"]
    assert set(tier) >= {
        "name", "model", "servedModelName", "engine", "image", "args", "env", "resources",
        "replicas", "port", "costWeight", "nodeSelector", "tolerations", "readinessProbe",
    }  # fmt: skip


def test_defaults_are_told_in_descriptions(schema: dict[str, Any]) -> None:
    nodes = dict(walk(schema))
    assert nodes["spec.autoscaling.interval"]["description"].endswith("Default: `30s`.")
    assert nodes["spec.router.failover"]["description"].endswith("Default: `true`.")
    assert nodes["spec.tiers[].port"]["description"].endswith("Default: `8000`.")


# ---- the structural checker itself can fail -----------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ({"type": "object", "properties": {"spec": {"$ref": "#/x"}}}, "key '$ref' is not allowed"),
        ({"type": "object", "properties": {"spec": {"description": "d"}}}, "type None missing"),
        ({"type": "object", "properties": {"spec": {"type": "string"}}}, "spec: no description"),
        ({"type": "object", "additionalProperties": {"type": "string"}}, ""),
        (
            {"type": "object", "properties": {"a": {"type": "object", "additionalProperties": False,
                                                    "properties": {"b": {"type": "string"}}}}},
            "mutually exclusive",
        ),
        ({"type": "number", "minimum": 0, "exclusiveMinimum": 0}, "must be a boolean"),
        ({"type": "array"}, "array without an item schema"),
        ({"type": "object", "required": ["x"], "properties": {}}, "required field 'x'"),
        ({"x-kubernetes-int-or-string": True, "type": "string"}, "must not set type"),
        ({"type": "string", "title": "T"}, "key 'title' is not allowed"),
        ({"type": "null"}, "type 'null' missing or unknown"),
    ],
)  # fmt: skip
def test_structural_checker_catches(bad: dict[str, Any], problem: str) -> None:
    found = structural_problems(bad)
    if problem:
        assert any(problem in p for p in found), found
    else:
        assert found == []


def test_converter_refuses_what_it_cannot_translate() -> None:
    with pytest.raises(SchemaError, match="unsupported anyOf"):
        to_structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})
    with pytest.raises(SchemaError, match="unresolved"):
        to_structural({"$ref": "#/$defs/Missing"}, {})


def test_converter_translates_json_schema_forms() -> None:
    node = to_structural(
        {
            "anyOf": [{"$ref": "#/$defs/T"}, {"type": "null"}],
            "description": "outer",
            "default": None,
        },
        {"T": {"type": "object", "title": "T", "description": "inner",
               "additionalProperties": False,
               "properties": {"k": {"const": "x", "type": "string", "title": "K", "default": "x"},
                              "n": {"type": "number", "exclusiveMaximum": 5}}}},
    )  # fmt: skip
    assert node == {
        "description": "outer",
        "type": "object",
        "properties": {
            "k": {"description": "Default: `x`.", "type": "string", "enum": ["x"]},
            "n": {"type": "number", "maximum": 5, "exclusiveMaximum": True},
        },
    }


# ---- the command ------------------------------------------------------------------------------


def test_cli_prints_the_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()


def test_cli_output_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "crd.yaml"
    assert main(["crd", "--output", str(target)]) == 0
    assert target.read_text() == crd_yaml()
    assert main(["crd", "--check", str(target)]) == 0
    target.write_text(crd_yaml().replace("zr", "zz"))
    assert main(["crd", "--check", str(target)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["crd", "--check", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_cli_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd", "--reference"]) == 0
    assert capsys.readouterr().out == render_reference()


# ---- docs/api.md ------------------------------------------------------------------------------


def test_checked_in_reference_is_the_generated_one() -> None:
    assert DOCS.read_text(encoding="utf-8") == render_reference(), (
        "docs/api.md is out of date: run `make crd`"
    )


def test_reference_lists_every_field(schema: dict[str, Any]) -> None:
    text = render_reference()
    for path, _node in walk(schema):
        if not path.startswith(("spec.", "status.")) or path.endswith(("[]", ".*")):
            continue
        parent, _, name = path.rpartition(".")
        if parent.endswith(".*") or "*" in parent:
            continue
        assert f"### {parent}\n" in text, parent
        assert f"| `{name}`" in text, path


# ---- README.md's CR reference ------------------------------------------------------------------

README = REPO / "README.md"


def test_readme_cr_reference_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    assert splice_readme(text) == text, "README.md's CR reference is out of date: run `make crd`"


def test_readme_block_has_every_table_of_the_api_reference() -> None:
    tables = {line for line in render_reference().splitlines() if line.startswith("### ")}
    readme = README.read_text(encoding="utf-8")
    assert tables
    for heading in tables:
        assert f"#{heading}\n" in readme, heading


def test_splice_replaces_only_the_block() -> None:
    text = f"# Title\n\nbefore\n{README_BEGIN}\nstale table\n{README_END}\nafter\n"
    out = splice_readme(text)
    assert out.startswith(f"# Title\n\nbefore\n{README_BEGIN}\n")
    assert out.endswith(f"{README_END}\nafter\n")
    assert "stale table" not in out
    assert "#### spec.tiers[]\n" in out
    assert splice_readme(out) == out


def test_splice_without_markers_is_a_clear_error() -> None:
    with pytest.raises(MissingMarkersError, match="BEGIN CR reference"):
        splice_readme("# no markers here\n")


def test_cli_readme_check_and_rewrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "README.md"
    stale.write_text(f"intro\n{README_BEGIN}\nold\n{README_END}\n", encoding="utf-8")
    assert main(["crd", "--readme", str(stale), "--check", str(stale)]) == 1
    assert "CR reference block" in capsys.readouterr().err
    assert "old" in stale.read_text(encoding="utf-8"), "--check must not write"
    assert main(["crd", "--readme", str(stale)]) == 0
    assert main(["crd", "--readme", str(stale), "--check", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8").startswith("intro\n")


def test_cli_readme_without_markers_fails_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "README.md"
    plain.write_text("no block\n", encoding="utf-8")
    assert main(["crd", "--readme", str(plain)]) == 1
    assert "no generated CR-reference block" in capsys.readouterr().err
    assert plain.read_text(encoding="utf-8") == "no block\n"
