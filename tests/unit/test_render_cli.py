"""`zeta-router render`: the operator's children, or the operator's SpecValid message."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from zeta_router.api.models import SpecError
from zeta_router.api.pod_policy import USABLE_BY_ANNOTATION
from zeta_router.cli import main
from zeta_router.controller.apply import adopted, owner_view
from zeta_router.controller.desired import RenderSettings, compute
from zeta_router.controller.reconcile import Reconciler

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "manifests" / "samples" / "zetarouter-cpu.yaml"


def sample() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    return doc


def write(tmp_path: Path, *docs: dict[str, Any]) -> str:
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def render(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["render", *args])
    out, err = capsys.readouterr()
    return code, [d for d in yaml.safe_load_all(out) if d], err


def test_prints_the_children_the_operator_applies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = sample()
    doc["metadata"]["namespace"] = "team-a"
    code, out, err = render(capsys, "-f", write(tmp_path, doc), "--router-image", "r:1")
    assert code == 0, err
    # The controller's own computation, as its reconciler would own and apply each child.
    body = {**doc, "metadata": {**doc["metadata"], "uid": "x"}}
    want = compute(body, {}, {}, RenderSettings(router_image="r:1"))
    expected = [adopted(c, owner_view(body)) for c in want.children]
    for child in expected:
        child["metadata"].pop("ownerReferences")
    assert out == expected
    assert {c["metadata"]["namespace"] for c in out} == {"team-a"}
    assert sorted(c["kind"] for c in out) == sorted(c["kind"] for c in want.children)


def test_live_object_gets_the_owner_reference_and_its_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = sample()
    doc["metadata"].update(uid="1234", namespace="team-b")
    code, out, _ = render(capsys, "-f", write(tmp_path, doc), "--network-policy")
    assert code == 0
    assert "NetworkPolicy" in {c["kind"] for c in out}
    for child in out:
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref["uid"] == "1234"
        assert ref["kind"] == "ZetaRouter"
        assert ref["controller"] is True
        assert child["metadata"]["namespace"] == "team-b"


def test_refused_spec_exits_1_with_the_operators_specvalid_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = sample()
    doc["spec"]["tiers"][0]["modelCache"] = {"hostPath": {"path": "/"}}
    path = write(tmp_path, doc)
    code, out, err = render(capsys, "-f", path, "-n", "ns")
    assert code == 1
    assert out == []
    # What the reconciler writes into SpecValid: the same computation's message.
    body = {**doc, "metadata": {**doc["metadata"], "namespace": "ns"}}
    with pytest.raises(SpecError) as expected:
        compute(body, {}, {})
    assert err == f"ns/{doc['metadata']['name']}: {expected.value}\n"
    assert "policy rule model-cache-volume" in err
    # The installer's flag, the same as the operator's, lets it through.
    code, out, _ = render(capsys, "-f", path, "--allowed-cache-volume", "hostPath")
    assert code == 0
    assert out


def test_an_invalid_spec_gets_the_validation_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = sample()
    doc["spec"]["tiers"][1]["name"] = doc["spec"]["tiers"][0]["name"]
    code, _, err = render(capsys, "-f", write(tmp_path, doc))
    assert code == 1
    assert "spec.tiers" in err
    assert "duplicate" in err.lower()


def test_secrets_given_in_the_input_are_checked_for_the_mark(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = sample()
    name = doc["metadata"]["name"]
    doc["spec"]["tiers"][0]["env"] = [
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "k"}}}
    ]
    secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tok"}}
    code, _, err = render(capsys, "-f", write(tmp_path, doc))
    assert code == 1
    assert "Secret tok does not exist" in err
    code, _, err = render(capsys, "-f", write(tmp_path, doc, secret))
    assert code == 1
    assert f"must list {name!r}" in err
    marked = copy.deepcopy(secret)
    marked["metadata"]["annotations"] = {USABLE_BY_ANNOTATION: name}
    code, out, err = render(capsys, "-f", write(tmp_path, doc, marked))
    assert code == 0, err
    assert "Secret" not in {c["kind"] for c in out}  # never printed
    code, _, _ = render(capsys, "-f", write(tmp_path, doc), "--secret-refs", "any")
    assert code == 0


def test_reads_standard_input_and_refuses_unusable_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(SAMPLE.read_text()))
    code, out, _ = render(capsys, "-f", "-")
    assert code == 0
    assert out
    empty = tmp_path / "empty.yaml"
    empty.write_text("kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n")
    code, _, err = render(capsys, "-f", str(empty))
    assert code == 2
    assert "no ZetaRouter" in err
    code, _, err = render(capsys, "-f", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "missing.yaml" in err


def test_help_says_what_it_does_and_shares_the_operators_flags() -> None:
    def help_of(*cmd: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "zeta_router", *cmd, "--help"],
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout

    text = help_of("render")
    for part in ("SpecValid", "exit status", "-f FILE", "zeta.ai/usable-by", "router-key"):
        assert part in text, part
    operator = help_of("operator")
    for flag in (
        "--router-image",
        "--network-policy",
        "--allowed-cache-volume",
        "--allow-root",
        "--allowed-model-image-prefix",
        "--allowed-router-image-prefix",
        "--secret-refs",
    ):
        assert flag in text, flag
        assert flag in operator, flag


def test_the_reconciler_uses_the_same_computation() -> None:
    """One code path: the reconciler's computation is desired.compute (what render calls)."""
    import inspect

    source = inspect.getsource(Reconciler)
    assert "desired_mod.compute(" in source
