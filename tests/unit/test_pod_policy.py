"""The installer's pod policy (pure): what a ZetaRouter may put into pods, and the controller's
own path refusing what breaks it (``controller.desired.compute``)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from zeta_router.api.models import parse_zetarouter
from zeta_router.api.pod_policy import (
    USABLE_BY_ANNOTATION,
    PodPolicy,
    PolicyError,
    check_pods,
    check_spec,
    referenced_secrets,
    usable_by,
)
from zeta_router.controller.desired import RenderSettings, compute

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "manifests" / "samples" / "zetarouter-cpu.yaml"


def body(**tier0: Any) -> dict[str, Any]:
    doc = copy.deepcopy(yaml.safe_load(SAMPLE.read_text()))
    doc["metadata"] = {"name": "chat", "namespace": "ns", "uid": "u", "generation": 1}
    doc["spec"]["tiers"][0].update(tier0)
    return doc


def rules(doc: dict[str, Any], policy: PodPolicy | None = None, **secrets: Any) -> list[str]:
    spec = parse_zetarouter(doc)
    return [v.rule for v in check_spec("chat", spec, policy or PodPolicy(), secrets)]


def secret_env(name: str = "hf-token") -> list[dict[str, Any]]:
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "token"}}}]


def commented_marks(text: str) -> dict[str, dict[str, str]]:
    """The annotations a sample's comments tell to put on each Secret (``kubectl annotate secret
    NAME KEY=VALUE ...``, continued over ``\\`` line ends)."""
    joined = re.sub(r"\\\n#\s*", " ", text)
    out: dict[str, dict[str, str]] = {}
    for name, marks in re.findall(r"kubectl annotate secret (\S+)((?: +[\w./-]+=\S+)+)", joined):
        out[name] = dict(m.split("=", 1) for m in marks.split())
    return out


def test_the_samples_pass_the_default_policy() -> None:
    for path in sorted((REPO / "manifests" / "samples").glob("*.yaml")):
        text = path.read_text()
        doc = yaml.safe_load(text)
        # (their Secrets marked as the samples' comments say)
        marks = commented_marks(text)
        secrets = {s: marks.get(s) for s in referenced_secrets(doc)}
        assert None not in secrets.values(), f"{path.name}: a Secret its comments do not mark"
        found = check_spec(doc["metadata"]["name"], parse_zetarouter(doc), PodPolicy(), secrets)
        assert found == [], path.name


@pytest.mark.parametrize(
    "cache",
    [{"persistentVolumeClaim": {"claimName": "c"}}, {"emptyDir": {}}, {"ephemeral": {}}],
)
def test_default_cache_volume_types_are_allowed(cache: dict[str, Any]) -> None:
    assert rules(body(modelCache=cache)) == []


@pytest.mark.parametrize(
    "cache",
    [
        {"hostPath": {"path": "/"}},
        {"nfs": {"server": "nfs.example", "path": "/"}},
        {"csi": {"driver": "x"}},
        {"emptyDir": {}, "hostPath": {"path": "/"}},  # two sources: the apiserver picks one
    ],
)
def test_other_cache_volume_types_are_refused(cache: dict[str, Any]) -> None:
    assert rules(body(modelCache=cache)) == ["model-cache-volume"]


def test_cache_volume_types_are_the_installers_choice() -> None:
    nfs = body(modelCache={"nfs": {"server": "nfs.example", "path": "/"}})
    assert rules(nfs, PodPolicy(cache_volume_types=("nfs",))) == []
    pvc = body(modelCache={"persistentVolumeClaim": {"claimName": "c"}})
    assert rules(pvc, PodPolicy(cache_volume_types=("nfs",))) == ["model-cache-volume"]
    # No modelCache: the operator's own emptyDir, whatever the list.
    assert rules(body(), PodPolicy(cache_volume_types=())) == []


def test_root_only_when_allowed() -> None:
    assert rules(body(runAsUser=0)) == ["run-as-root"]
    assert rules(body(runAsUser=0), PodPolicy(allow_root=True)) == []
    assert rules(body(runAsUser=1234)) == []


def test_image_prefixes() -> None:
    policy = PodPolicy(model_image_prefixes=("registry.example.com/models/",))
    doc = body()
    for tier in doc["spec"]["tiers"]:
        tier["image"] = "registry.example.com/models/llama:1"
    assert rules(doc, policy) == []
    doc["spec"]["tiers"][0]["image"] = "evil.example/llama:1"
    assert rules(doc, policy) == ["model-image"]
    # A tier's default image counts too: the installer lists the registries it trusts.
    doc = body()
    doc["spec"]["tiers"][0].pop("image", None)
    assert "model-image" in rules(doc, policy)
    router = body()
    router["spec"]["router"]["image"] = "evil.example/router:1"
    assert rules(router, PodPolicy(router_image_prefixes=("registry.example.com/",))) == [
        "router-image"
    ]
    assert rules(router) == []  # no list: any image


def test_secret_refs_only_to_secrets_marked_for_this_router() -> None:
    doc = body(env=secret_env())
    assert referenced_secrets(doc) == ["hf-token"]
    assert rules(doc) == ["secret-ref"]  # not read: missing, or unreadable
    assert rules(doc, **{"hf-token": None}) == ["secret-ref"]
    assert rules(doc, **{"hf-token": {}}) == ["secret-ref"]
    assert rules(doc, **{"hf-token": {USABLE_BY_ANNOTATION: "other"}}) == ["secret-ref"]
    assert rules(doc, **{"hf-token": {USABLE_BY_ANNOTATION: "other, chat"}}) == []
    assert rules(doc, **{"hf-token": {USABLE_BY_ANNOTATION: "*"}}) == []
    assert rules(doc, PodPolicy(secret_refs="any")) == []
    assert rules(
        doc, PodPolicy(secret_refs="none"), **{"hf-token": {"zeta.ai/usable-by": "*"}}
    ) == ["secret-ref"]
    # Other sources of a value are not Secrets.
    plain = body(env=[{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    assert referenced_secrets(plain) == []
    assert rules(plain) == []
    assert usable_by({USABLE_BY_ANNOTATION: " a ,b,, "}) == ["a", "b"]


def test_the_pod_guard_refuses_privilege_in_rendered_pods() -> None:
    ok = compute(body(), {}, {}).children
    assert check_pods(ok) == []
    bad = copy.deepcopy(next(c for c in ok if c["kind"] == "Deployment"))
    pod = bad["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    pod["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
    pod["containers"][0]["securityContext"]["privileged"] = True
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]
    pod["containers"][1]["securityContext"]["allowPrivilegeEscalation"] = True
    found = [v.message for v in check_pods([bad])]
    assert found == [
        "hostNetwork is not allowed",
        "volume root: hostPath is not allowed",
        "privileged is not allowed",
        "added capabilities are not allowed",
        "allowPrivilegeEscalation must be false",
    ]


def test_compute_refuses_with_every_violation_named_by_path_and_rule() -> None:
    doc = body(modelCache={"hostPath": {"path": "/"}}, runAsUser=0, env=secret_env())
    with pytest.raises(PolicyError) as err:
        compute(doc, {}, {})
    assert err.value.rules == ["model-cache-volume", "run-as-root", "secret-ref"]
    message = str(err.value)
    assert message.startswith(
        "spec.tiers[0].modelCache: volume type hostPath is not allowed for the model cache "
        "(allowed: persistentVolumeClaim, emptyDir, ephemeral) (policy rule model-cache-volume, "
        "set by --allowed-cache-volume / podPolicy.modelCacheVolumeTypes); "
        "spec.tiers[0].runAsUser: "
    )
    assert "spec.tiers[0].env[0].valueFrom.secretKeyRef: Secret hf-token" in message
    # The installer's settings let it through, the annotation included.
    settings = RenderSettings(
        pod_policy=PodPolicy(cache_volume_types=("hostPath",), allow_root=True)
    )
    marked = {"hf-token": {USABLE_BY_ANNOTATION: "chat"}}
    want = compute(doc, {}, {}, settings, secret_annotations=marked)
    (dep, *_) = [c for c in want.children if c["kind"] == "Deployment"]
    assert {"name": "cache", "hostPath": {"path": "/"}} in dep["spec"]["template"]["spec"][
        "volumes"
    ]
