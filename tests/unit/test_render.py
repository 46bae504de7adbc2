"""Rendering: golden files of the samples' children, and the properties the operator relies on.

Regenerate the golden files after an intended change with::

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_render.py
"""

from __future__ import annotations

import base64
import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.routing_files import with_key_files
from zeta_router.api import defaults
from zeta_router.api.crd import to_yaml
from zeta_router.api.models import (
    DisruptionBudget,
    SpecError,
    ZetaRouterSpec,
    ZetaRouterStatus,
    parse_status,
    parse_zetarouter,
)
from zeta_router.api.routing import CONFIGMAP_KEY, RoutingConfig, parse_routing_yaml
from zeta_router.render import names
from zeta_router.render.children import (
    Rendered,
    build_children,
    initial_replicas,
    loop_desired_replicas,
    render,
)
from zeta_router.render.configmap import (
    build_configmap,
    build_routing_config,
    effective_thresholds,
    routing_generation,
    thresholds_summary,
)
from zeta_router.render.deployment import build_deployment, model_server_args
from zeta_router.render.disruption import build_pdb
from zeta_router.render.router_key import build_router_key_secret
from zeta_router.router.config import compile_config

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
SAMPLES = {
    "zetarouter-7b-14b": REPO / "manifests/samples/zetarouter-7b-14b.yaml",
    "zetarouter-cpu": REPO / "manifests/samples/zetarouter-cpu.yaml",
    "zetarouter-external-overflow": REPO / "manifests/samples/zetarouter-external-overflow.yaml",
}
NAMESPACE = "demo"


def sample_body(key: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(SAMPLES[key].read_text())
    return body


def two_tiers(**router: Any) -> ZetaRouterSpec:
    return parse_zetarouter(
        {
            "tiers": [
                {"name": "small", "model": "Qwen/Qwen2.5-7B-Instruct", "replicas": {"max": 3}},
                {"name": "large", "model": "Qwen/Qwen2.5-14B-Instruct", "costWeight": 2.2},
            ],
            "router": router,
        }
    )


def by_kind(children: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in children if c["kind"] == kind}


def routing_of(rendered: Rendered) -> dict[str, Any]:
    (cm,) = by_kind(rendered.children, "ConfigMap").values()
    doc: dict[str, Any] = yaml.safe_load(cm["data"][CONFIGMAP_KEY])
    return doc


# ---- golden files -----------------------------------------------------------------------------


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    assert path.read_text(encoding="utf-8") == text, (
        f"rendered output differs from {path.name}; if intended, rerun with UPDATE_GOLDEN=1 "
        "and review the diff"
    )


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_sample_children_match_golden(key: str) -> None:
    body = sample_body(key)
    spec = parse_zetarouter(body)
    out = render(body["metadata"]["name"], NAMESPACE, spec)
    check_golden(f"{key}.yaml", "".join("---\n" + to_yaml(c) for c in out.children))


def test_three_tiers_with_loop_thresholds_match_golden() -> None:
    spec = parse_zetarouter(
        {
            "tiers": [
                {"name": "s", "model": "/models/s.gguf", "engine": "llamacpp", "port": 9000},
                {"name": "m", "model": "org/m-GGUF:q4_k_m", "engine": "llamacpp", "runAsUser": 0},
                {"name": "l", "model": "org/l", "replicas": {"min": 2, "max": 4},
                 "env": [{"name": "HOME", "value": "/data"}, {"name": "X", "value": "1"}],
                 "modelCache": {"persistentVolumeClaim": {"claimName": "hf"}},
                 "nodeSelector": {"gpu": "h100"},
                 "tolerations": [{"key": "gpu", "operator": "Exists"}],
                 "readinessProbe": {"httpGet": {"path": "/v1/models", "port": "model"}}},
            ],
            "router": {"image": "registry.local/zeta-router:dev", "modelName": "assistant",
                       "args": ["--access-log"], "contexts": [{"name": "default"}]},
            "feedback": {"enabled": True, "targetLargeShare": 0.2},
            "autoscaling": {"prometheus": {"url": "http://prom:9090"}},
        }
    )  # fmt: skip
    status = parse_status(
        {"status": {"thresholds": {"default": [0.3, 0.7]}, "routingGeneration": 7}}
    )
    out = render("zr", NAMESPACE, spec, status, replicas={"l": 3})
    assert out.routing.generation == 8
    check_golden("three-tiers.yaml", "".join("---\n" + to_yaml(c) for c in out.children))


# ---- structure --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_the_routing_file_is_what_the_pure_python_emitter_writes(key: str) -> None:
    # The operator renders with libyaml where PyYAML has it: an operator with or without it (or
    # before it used it) must write the same text, or each would rewrite the other's file.
    body = sample_body(key)
    (cm,) = by_kind(render("r", NAMESPACE, parse_zetarouter(body)).children, "ConfigMap").values()
    text = cm["data"][CONFIGMAP_KEY]
    data = yaml.safe_load(text)
    pure = yaml.dump(data, Dumper=yaml.SafeDumper, sort_keys=False, width=1 << 16)
    assert text == pure
    # And the operator's parser (libyaml's where PyYAML has it) reads what the pure one does.
    assert parse_routing_yaml(text) == RoutingConfig.model_validate(
        yaml.load(text, Loader=yaml.SafeLoader)
    )


def test_children_names_and_order() -> None:
    out = render("chat", NAMESPACE, two_tiers())
    assert [(c["kind"], c["metadata"]["name"]) for c in out.children] == [
        ("ConfigMap", "chat-routing"),
        ("Deployment", "chat-small"),
        ("Service", "chat-small"),
        ("Service", "chat-small-replicas"),
        ("PodDisruptionBudget", "chat-small"),
        ("Deployment", "chat-large"),
        ("Service", "chat-large"),
        ("Service", "chat-large-replicas"),
        ("PodDisruptionBudget", "chat-large"),
        ("Service", "chat"),
    ]
    assert out.tier_deployments == {"small": "chat-small", "large": "chat-large"}
    assert all("namespace" not in c["metadata"] for c in out.children)


def test_each_tier_has_a_headless_service_of_its_ready_pods_named_in_the_routing_config() -> None:
    out = render("chat", NAMESPACE, two_tiers())
    headless = {c["metadata"]["name"]: c for c in out.children if c["kind"] == "Service"}
    for tier in out.routing.tiers:
        svc = headless[f"chat-{tier.name}-replicas"]
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["publishNotReadyAddresses"] is False
        assert svc["spec"]["selector"] == names.tier_selector("chat", tier.name)
        # Not selected by the monitors of the tier Services (no second scrape of each pod).
        assert svc["metadata"]["labels"][names.COMPONENT] == "replicas"
        port = svc["spec"]["ports"][0]["port"]
        assert tier.replicas == [f"http://chat-{tier.name}-replicas.{NAMESPACE}.svc:{port}"]


def test_the_balancing_settings_reach_the_routers() -> None:
    out = render(
        "chat", NAMESPACE, two_tiers(balancing={"strategy": "least-loaded", "loadFactor": 2})
    )
    assert out.routing.balancing.strategy == "least-loaded"
    assert out.routing.balancing.load_factor == 2.0
    assert render("chat", NAMESPACE, two_tiers()).routing.balancing.strategy == "prefix"


def test_a_long_headless_service_name_is_shortened_alike_within_63_characters() -> None:
    router, tier = "r" * 40, "t" * 22
    name = names.tier_replicas_service_name(router, tier)
    assert len(name) <= 63
    assert name == names.tier_replicas_service_name(router, tier)
    assert name != names.tier_replicas_service_name(router, "t" * 21 + "u")


@pytest.mark.parametrize(
    ("max_unavailable", "replicas", "rendered"),
    [(1, 1, 0), (1, 2, 1), (1, 5, 1), (2, 2, 1), (2, 5, 2), (0, 5, 0), (1, 0, 0)],
)
def test_a_tier_disruption_budget_never_takes_the_last_replica(
    max_unavailable: int, replicas: int, rendered: int
) -> None:
    spec = two_tiers()
    tier = spec.tiers[0].model_copy(
        update={"disruption_budget": DisruptionBudget(max_unavailable=max_unavailable)}
    )
    pdb = build_pdb("chat", tier, replicas)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {
        "maxUnavailable": rendered,
        "selector": {"matchLabels": names.tier_selector("chat", "small")},
    }
    # Its selector is the tier Deployment's: the budget counts exactly the tier's pods.
    out = render("chat", NAMESPACE, spec, replicas={"small": replicas})
    dep = by_kind(out.children, "Deployment")["chat-small"]
    assert dep["spec"]["selector"]["matchLabels"] == pdb["spec"]["selector"]["matchLabels"]


def test_disruption_budgets_follow_the_cluster_api_and_the_spec() -> None:
    old = render("chat", NAMESPACE, two_tiers(), pdb_api_version="policy/v1beta1")
    assert {c["apiVersion"] for c in old.children if c["kind"] == "PodDisruptionBudget"} == {
        "policy/v1beta1"
    }
    spec = two_tiers()
    off = spec.tiers[1].model_copy(update={"disruption_budget": DisruptionBudget(enabled=False)})
    spec = spec.model_copy(update={"tiers": [spec.tiers[0], off]})
    names_ = [c["metadata"]["name"] for c in render("chat", NAMESPACE, spec).children
              if c["kind"] == "PodDisruptionBudget"]  # fmt: skip
    assert names_ == ["chat-small"]
    with pytest.raises(SpecError, match="maxUnavailable"):
        parse_zetarouter(
            {
                "apiVersion": "zeta.ai/v1alpha1",
                "kind": "ZetaRouter",
                "metadata": {"name": "x"},
                "spec": {
                    "tiers": [
                        {"name": "s", "model": "m", "disruptionBudget": {"maxUnavailable": -1}}
                    ]
                },
            }
        )


def test_every_child_and_pod_carries_the_labels() -> None:
    out = render("chat", NAMESPACE, two_tiers())
    common = {
        "app.kubernetes.io/name": "zeta-router",
        "app.kubernetes.io/instance": "chat",
        "app.kubernetes.io/managed-by": "zeta-router",
    }
    for child in out.children:
        labels = child["metadata"]["labels"]
        assert labels.items() >= common.items(), child["metadata"]["name"]
        assert labels["app.kubernetes.io/component"] in ("model-server", "router", "replicas")
    for dep in by_kind(out.children, "Deployment").values():
        tier = dep["metadata"]["labels"]["zeta.ai/tier"]
        pod = dep["spec"]["template"]["metadata"]["labels"]
        assert pod.items() >= {**common, "zeta.ai/tier": tier}.items()
        assert pod["app.kubernetes.io/component"] == "model-server"
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod.items()


def test_services_select_the_right_pods() -> None:
    out = render("chat", NAMESPACE, two_tiers())
    pods = {
        name: d["spec"]["template"]["metadata"]["labels"]
        for name, d in by_kind(out.children, "Deployment").items()
    }
    services = by_kind(out.children, "Service")

    def selected(svc: dict[str, Any]) -> set[str]:
        sel = svc["spec"]["selector"].items()
        return {name for name, labels in pods.items() if sel <= labels.items()}

    assert selected(services["chat"]) == {"chat-small", "chat-large"}
    assert selected(services["chat-small"]) == {"chat-small"}
    assert selected(services["chat-large"]) == {"chat-large"}
    # The entry Service exposes the client API only: never health or metrics.
    (entry_port,) = services["chat"]["spec"]["ports"]
    assert (entry_port["port"], entry_port["targetPort"]) == (defaults.ROUTER_PORT, "router")
    # The tier Service carries the model port only: the routers' admin port (samples, drain)
    # is on no Service; the operator reaches it by pod IP.
    (tier_port,) = services["chat-small"]["spec"]["ports"]
    assert (tier_port["port"], tier_port["targetPort"]) == (defaults.VLLM_PORT, "model")
    for svc in services.values():
        assert all(p["targetPort"] != "admin" for p in svc["spec"]["ports"])


def test_two_routers_in_one_namespace_do_not_select_each_others_pods() -> None:
    a = render("a", NAMESPACE, two_tiers()).children
    b = render("b", NAMESPACE, two_tiers()).children
    entry_a = by_kind(a, "Service")["a"]["spec"]["selector"].items()
    for dep in by_kind(b, "Deployment").values():
        assert not entry_a <= dep["spec"]["template"]["metadata"]["labels"].items()


def pod_spec(children: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(children, "Deployment")[name]["spec"]["template"]["spec"]
    return spec


def containers(children: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec(children, name)["containers"]}


def test_model_server_container_for_vllm() -> None:
    out = render("chat", NAMESPACE, two_tiers())
    model = containers(out.children, "chat-large")["model"]
    assert model["image"] == defaults.VLLM_IMAGE
    assert model["args"] == [
        "--model", "Qwen/Qwen2.5-14B-Instruct",
        "--served-model-name", "Qwen/Qwen2.5-14B-Instruct",
        "--port", "8000", "--tensor-parallel-size", "1",
    ]  # fmt: skip
    assert model["resources"] == {
        "limits": {"nvidia.com/gpu": "1"},  # strings: what server-side apply wants
        "requests": {"cpu": "4", "memory": "16Gi"},
    }
    assert model["ports"] == [{"name": "model", "containerPort": 8000, "protocol": "TCP"}]
    assert model["readinessProbe"]["httpGet"] == {"path": "/health", "port": "model"}
    assert {"name": "VLLM_NO_USAGE_STATS", "value": "1"} in model["env"]
    assert "command" not in model  # the image's entrypoint is the server


def test_vllm_extra_args_and_served_name() -> None:
    spec = parse_zetarouter(
        {"tiers": [{"name": "t", "model": "org/m", "servedModelName": "m", "port": 8001,
                    "args": ["--max-model-len", "8192"]}]}
    )  # fmt: skip
    assert model_server_args(spec.tiers[0]) == [
        "--model", "org/m", "--served-model-name", "m", "--port", "8001",
        "--tensor-parallel-size", "1", "--max-model-len", "8192",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "flag"),
    [
        ("/models/x.gguf", ["--model", "/models/x.gguf"]),
        ("x.gguf", ["--model", "x.gguf"]),
        (
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m",
            ["--hf-repo", "Qwen/Qwen2.5-0.5B-Instruct-GGUF:q4_k_m"],
        ),
    ],
)
def test_llamacpp_command_line(model: str, flag: list[str]) -> None:
    spec = parse_zetarouter(
        {"tiers": [{"name": "t", "model": model, "engine": "llamacpp", "servedModelName": "s",
                    "args": ["--threads", "2"]}]}
    )  # fmt: skip
    assert model_server_args(spec.tiers[0]) == [
        *flag, "--alias", "s", "--host", "0.0.0.0", "--port", "8000", "--metrics",
        "--threads", "2",
    ]  # fmt: skip
    dep = build_deployment("r", spec, spec.tiers[0], 1)
    (model_c, _router) = dep["spec"]["template"]["spec"]["containers"]
    assert model_c["image"] == defaults.LLAMACPP_IMAGE
    assert "nvidia.com/gpu" not in str(model_c["resources"])
    assert {"name": "LLAMA_CACHE", "value": "/cache/llama.cpp"} in model_c["env"]
    volumes = {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert "shm" not in volumes


def test_router_sidecar() -> None:
    out = render("chat", NAMESPACE, two_tiers(port=9090, args=["--access-log"]))
    router = containers(out.children, "chat-small")["router"]
    assert router["image"] == defaults.ROUTER_IMAGE
    assert router["command"] == ["zeta-router"]
    assert router["args"] == [
        "router", "--config", "/etc/zeta-router/routing.yaml", "--local-tier", "small",
        "--port", "9090", "--drain-delay", "5", "--drain-quiet", "5", "--drain-timeout", "60",
        "--drain-seconds", "600",
        "--admin-port", "8081",
        "--request-key-file", "/var/run/zeta-router/key/key",
        "--ngram-key-file", "/var/run/zeta-router/key/ngram-key", "--access-log",
    ]  # fmt: skip
    assert router["ports"] == [
        {"name": "router", "containerPort": 9090, "protocol": "TCP"},
        {"name": "admin", "containerPort": 8081, "protocol": "TCP"},
    ]
    # The probes use the admin port, where health lives (the client port has no /healthz).
    assert router["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert router["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    mount = next(m for m in router["volumeMounts"] if m["name"] == "routing")
    assert mount == {"name": "routing", "mountPath": "/etc/zeta-router", "readOnly": True}
    volume = next(
        v for v in pod_spec(out.children, "chat-small")["volumes"] if v["name"] == "routing"
    )
    assert volume["configMap"]["name"] == "chat-routing"
    # The signing key every router of the ZetaRouter shares, from the Secret the operator makes.
    key_mount = next(m for m in router["volumeMounts"] if m["name"] == "router-key")
    assert key_mount == {
        "name": "router-key", "mountPath": "/var/run/zeta-router/key", "readOnly": True
    }  # fmt: skip
    key_volume = next(
        v for v in pod_spec(out.children, "chat-small")["volumes"] if v["name"] == "router-key"
    )
    assert key_volume["secret"] == {"secretName": "chat-router-key"}
    model_mounts = {
        m["name"] for m in containers(out.children, "chat-small")["model"]["volumeMounts"]
    }
    assert "router-key" not in model_mounts  # the model server never sees it
    secret = build_router_key_secret("chat", "s3cret-key-material")
    assert secret["metadata"]["name"] == "chat-router-key"
    assert base64.b64decode(secret["data"]["key"]) == b"s3cret-key-material"
    assert "ngram-key" not in secret["data"]
    both = build_router_key_secret("chat", "s3cret-key-material", "n-gram-s3cret")
    assert base64.b64decode(both["data"]["ngram-key"]) == b"n-gram-s3cret"
    entry_port = by_kind(out.children, "Service")["chat"]["spec"]["ports"][0]["port"]
    assert entry_port == 9090


def test_router_image_from_the_operator_unless_the_spec_sets_one() -> None:
    out = render("chat", NAMESPACE, two_tiers(), router_image="reg/zeta-router:1.2.3")
    assert containers(out.children, "chat-small")["router"]["image"] == "reg/zeta-router:1.2.3"
    out = render("chat", NAMESPACE, two_tiers(image="mine:1"), router_image="reg/z:1")
    assert containers(out.children, "chat-small")["router"]["image"] == "mine:1"


def test_pod_security() -> None:
    out = render("chat", NAMESPACE, two_tiers())
    for dep in by_kind(out.children, "Deployment"):
        spec = pod_spec(out.children, dep)
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["runAsNonRoot"] is True
            assert sc["runAsUser"] != 0
            assert "privileged" not in sc
        assert containers(out.children, dep)["router"]["securityContext"]["readOnlyRootFilesystem"]


def test_root_only_images_can_opt_out_of_non_root() -> None:
    spec = parse_zetarouter({"tiers": [{"name": "t", "model": "m", "runAsUser": 0}]})
    dep = build_deployment("r", spec, spec.tiers[0], 1)
    model, router = dep["spec"]["template"]["spec"]["containers"]
    assert model["securityContext"]["runAsNonRoot"] is False
    assert model["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert router["securityContext"]["runAsNonRoot"] is True
    assert "fsGroup" not in dep["spec"]["template"]["spec"]["securityContext"]


def test_user_env_replaces_the_default_of_the_same_name() -> None:
    spec = parse_zetarouter(
        {"tiers": [{"name": "t", "model": "m", "env": [
            {"name": "HOME", "value": "/data"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ]}]}
    )  # fmt: skip
    env = build_deployment("r", spec, spec.tiers[0], 1)["spec"]["template"]["spec"]["containers"][
        0
    ]["env"]
    assert [e["name"] for e in env].count("HOME") == 1
    assert {"name": "HOME", "value": "/data"} in env
    assert env[-1] == {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}


def test_replicas_are_an_input_with_initial_as_the_fallback() -> None:
    spec = two_tiers()
    assert initial_replicas(spec) == {"small": 1, "large": 1}
    out = render("chat", NAMESPACE, spec, replicas={"small": 3})
    deps = by_kind(out.children, "Deployment")
    assert deps["chat-small"]["spec"]["replicas"] == 3
    assert deps["chat-large"]["spec"]["replicas"] == 1


def test_loop_desired_replicas_from_status() -> None:
    status = parse_status(
        {"status": {"tiers": [{"name": "small", "desiredReplicas": 2}, {"name": "large"}]}}
    )
    assert loop_desired_replicas(status) == {"small": 2}
    assert loop_desired_replicas(None) == {}


def test_rollouts_surge_first_unless_the_tier_chooses_replace() -> None:
    out = render("chat", NAMESPACE, two_tiers())
    for dep in by_kind(out.children, "Deployment").values():
        # A new pod is ready before an old one stops: capacity never drops.
        assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    spec = parse_zetarouter(
        {"tiers": [{"name": "t", "model": "m", "rolloutStrategy": "Replace"}]}
    )  # fmt: skip
    dep = build_deployment("chat", spec, spec.tiers[0], 1)
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


# ---- the routing ConfigMap --------------------------------------------------------------------


def test_routing_config_content() -> None:
    spec = two_tiers(
        contexts=[{"name": "ZetaHRM", "thresholds": [0.4]}, {"name": "default"}],
        shadowSampleRate=0.1,
        failover=False,
    )
    doc = routing_of(render("chat", NAMESPACE, spec))
    cfg = RoutingConfig.model_validate(doc)
    assert cfg.generation == 1
    assert cfg.router == "chat"
    tiers = [(t.name, t.url, t.local_url, t.served_model_name, t.cost_weight) for t in cfg.tiers]
    assert tiers == [
        ("small", "http://chat-small.demo.svc:8000", "http://127.0.0.1:8000",
         "Qwen/Qwen2.5-7B-Instruct", 1.0),
        ("large", "http://chat-large.demo.svc:8000", "http://127.0.0.1:8000",
         "Qwen/Qwen2.5-14B-Instruct", 2.2),
    ]  # fmt: skip
    assert [(c.name, c.thresholds) for c in cfg.contexts] == [
        ("ZetaHRM", [0.4]),
        ("default", [0.5]),
    ]
    assert cfg.default_context == "default"
    assert cfg.shadow_sample_rate == 0.1
    assert cfg.failover is False


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_the_router_accepts_the_rendered_config_for_every_tier(key: str, tmp_path: Path) -> None:
    body = sample_body(key)
    spec = parse_zetarouter(body)
    out = render(body["metadata"]["name"], NAMESPACE, spec)
    # (each external tier's key file, as the router containers' Secret volumes hold it)
    cfg = with_key_files(RoutingConfig.model_validate(routing_of(out)), tmp_path)
    for tier in spec.served_tiers:
        runtime = compile_config(cfg, local_tier=tier.name)
        local = runtime.tier_by_name[tier.name]
        assert local.url == f"http://127.0.0.1:{tier.port}"
        others = [t for t in runtime.tiers if t.name != tier.name and t.external is None]
        assert all(t.url.endswith(f".{NAMESPACE}.svc:{t_port(spec, t.name)}") for t in others)


def t_port(spec: ZetaRouterSpec, tier: str) -> int:
    return spec.tier(tier).port


def test_threshold_only_change_leaves_every_deployment_unchanged() -> None:
    before_spec = sample_body("zetarouter-7b-14b")
    after_spec = copy.deepcopy(before_spec)
    after_spec["spec"]["router"]["contexts"][0]["thresholds"] = [0.35]
    before = render("chat", NAMESPACE, parse_zetarouter(before_spec))
    live_cm = by_kind(before.children, "ConfigMap")["chat-routing"]
    after = render("chat", NAMESPACE, parse_zetarouter(after_spec), live_configmap=live_cm)
    assert by_kind(after.children, "Deployment") == by_kind(before.children, "Deployment")
    assert by_kind(after.children, "Service") == by_kind(before.children, "Service")
    assert after.children[0] != before.children[0]
    assert routing_of(after)["contexts"][0]["thresholds"] == [0.35]
    assert (before.routing.generation, after.routing.generation) == (1, 2)
    assert after.status_fields["thresholdsSummary"] == "ZetaHRM=0.35 ZetaTRM=0.6 default=0.5"


def test_image_change_touches_only_that_tiers_deployment() -> None:
    body = sample_body("zetarouter-7b-14b")
    before = render("chat", NAMESPACE, parse_zetarouter(body))
    body["spec"]["tiers"][1]["image"] = "vllm/vllm-openai:v0.9.0"
    live_cm = by_kind(before.children, "ConfigMap")["chat-routing"]
    after = render("chat", NAMESPACE, parse_zetarouter(body), live_configmap=live_cm)
    b, a = by_kind(before.children, "Deployment"), by_kind(after.children, "Deployment")
    assert a["chat-7b"] == b["chat-7b"]
    assert a["chat-14b"] != b["chat-14b"]
    assert containers(after.children, "chat-14b")["model"]["image"] == "vllm/vllm-openai:v0.9.0"
    assert after.routing.generation == before.routing.generation == 1


def test_no_pod_template_annotations() -> None:
    # A config hash on the pod template would restart GPU pods on every threshold change.
    out = render("chat", NAMESPACE, two_tiers())
    for dep in by_kind(out.children, "Deployment").values():
        assert "annotations" not in dep["spec"]["template"]["metadata"]


# ---- generation -------------------------------------------------------------------------------


def test_routing_generation() -> None:
    spec = two_tiers()
    config = build_routing_config("chat", NAMESPACE, spec)
    assert routing_generation(config, None) == 1
    live = build_configmap("chat", config.model_copy(update={"generation": 5}))
    assert routing_generation(config, live) == 5
    assert routing_generation(config, live, last_generation=9) == 5
    changed = build_routing_config("chat", NAMESPACE, spec, {"default": [0.45]})
    assert routing_generation(changed, live) == 6
    assert routing_generation(changed, live, last_generation=9) == 10
    # A ConfigMap deleted by hand: the generation still never goes back.
    assert routing_generation(config, None, last_generation=9) == 10
    garbage = {"data": {CONFIGMAP_KEY: "tiers: [unclosed"}}
    assert routing_generation(config, garbage, last_generation=3) == 4
    assert routing_generation(config, {"data": {}}) == 1


# ---- which thresholds ---------------------------------------------------------------------------


def owning_spec(bounds: list[dict[str, Any]] | None = None) -> ZetaRouterSpec:
    return parse_zetarouter(
        {
            "tiers": [{"name": "s", "model": "a"}, {"name": "l", "model": "b"}],
            "router": {"contexts": [{"name": "ZetaHRM", "thresholds": [0.4]}, {"name": "default"}]},
            "feedback": {"enabled": True, "targetLargeShare": 0.3, "bounds": bounds or []},
            "autoscaling": {"prometheus": {"url": "http://prom:9090"}},
        }
    )


def status_with(thresholds: dict[str, Any]) -> ZetaRouterStatus:
    return parse_status({"status": {"thresholds": thresholds}})


def test_thresholds_are_the_specs_unless_the_loop_owns_them() -> None:
    status = status_with({"default": [0.7]})
    assert effective_thresholds(two_tiers(), status) == {
        "ZetaHRM": [0.4], "ZetaTRM": [0.6], "default": [0.5],
    }  # fmt: skip
    assert effective_thresholds(owning_spec(), status) == {"ZetaHRM": [0.4], "default": [0.7]}
    assert effective_thresholds(owning_spec(), None) == {"ZetaHRM": [0.4], "default": [0.5]}


@pytest.mark.parametrize(
    "loop_value",
    [[0.3, 0.6], [1.2], [], [-0.1]],
    ids=["wrong count", "above 1", "none", "below 0"],
)
def test_loop_thresholds_that_no_longer_fit_the_spec_are_ignored(loop_value: list[float]) -> None:
    status = status_with({"default": loop_value, "ZetaHRM": [0.45]})
    assert effective_thresholds(owning_spec(), status) == {"ZetaHRM": [0.45], "default": [0.5]}


def test_loop_thresholds_outside_the_bounds_are_ignored() -> None:
    spec = owning_spec([{"context": "default", "min": 0.4, "max": 0.6}])
    assert effective_thresholds(spec, status_with({"default": [0.65]}))["default"] == [0.5]
    assert effective_thresholds(spec, status_with({"default": [0.55]}))["default"] == [0.55]


def test_status_fields_and_summary() -> None:
    out = render("chat", NAMESPACE, two_tiers())
    assert out.status_fields == {
        "thresholds": {"ZetaHRM": [0.4], "ZetaTRM": [0.6], "default": [0.5]},
        "thresholdsSummary": "ZetaHRM=0.4 ZetaTRM=0.6 default=0.5",
        "routingGeneration": 1,
    }
    assert thresholds_summary({"default": [0.377541, 0.622459], "x": []}) == (
        "default=0.377541/0.622459 x=-"
    )


def test_build_children_is_render_without_the_decisions() -> None:
    spec = two_tiers()
    out = render("chat", NAMESPACE, spec, replicas={"small": 2})
    assert build_children("chat", spec, out.routing, {"small": 2}) == out.children


def test_names_helpers() -> None:
    assert names.children_selector("chat") == (
        "app.kubernetes.io/managed-by=zeta-router,app.kubernetes.io/instance=chat"
    )
    assert names.tier_object_name("chat", "7b") == "chat-7b"
    assert names.routing_configmap_name("chat") == "chat-routing"


def test_a_spec_edit_of_a_context_wins_over_the_loops_older_choice() -> None:
    spec = owning_spec()  # spec: ZetaHRM [0.4], default [0.5]
    chosen = {"ZetaHRM": [0.45], "default": [0.6]}
    # The loop chose from these spec values: its choice stands.
    status = parse_status(
        {"status": {"thresholds": chosen, "thresholdsFrom": {"ZetaHRM": [0.4], "default": [0.5]}}}
    )
    assert effective_thresholds(spec, status) == chosen
    # The user has since changed ZetaHRM in the spec (the loop chose from 0.35): the spec's
    # value is in force for that context only.
    edited = parse_status(
        {"status": {"thresholds": chosen, "thresholdsFrom": {"ZetaHRM": [0.35], "default": [0.5]}}}
    )
    assert effective_thresholds(spec, edited) == {"ZetaHRM": [0.4], "default": [0.6]}
    # A status written before thresholdsFrom existed keeps the loop's values.
    assert effective_thresholds(spec, status_with(chosen)) == chosen


# ---- placement, parallelism, stopping -------------------------------------------------------


def test_placement_knobs_reach_the_pods() -> None:
    spread = [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
               "whenUnsatisfiable": "DoNotSchedule"}]  # fmt: skip
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [
            {"key": "gpu", "operator": "In", "values": ["h100"]}]}}]}}  # fmt: skip
    spec = parse_zetarouter(
        {
            "imagePullSecrets": [{"name": "regcred"}],
            "tiers": [
                {"name": "small", "model": "m", "affinity": affinity,
                 "topologySpreadConstraints": spread, "priorityClassName": "inference-high"},
                {"name": "large", "model": "n", "topologySpreadConstraints": []},
            ],
        }
    )  # fmt: skip
    small = build_deployment("chat", spec, spec.tiers[0], 1)["spec"]["template"]["spec"]
    assert small["imagePullSecrets"] == [{"name": "regcred"}]
    assert small["affinity"] == affinity
    assert small["topologySpreadConstraints"] == spread
    assert small["priorityClassName"] == "inference-high"
    large = build_deployment("chat", spec, spec.tiers[1], 1)["spec"]["template"]["spec"]
    assert large["imagePullSecrets"] == [{"name": "regcred"}]
    assert "topologySpreadConstraints" not in large  # [] turns the default off
    assert "priorityClassName" not in large
    assert "affinity" not in large


def test_replicas_of_a_tier_spread_over_nodes_by_default() -> None:
    out = render("chat", NAMESPACE, two_tiers())
    (constraint,) = pod_spec(out.children, "chat-small")["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname"
    assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # never blocks scheduling
    assert constraint["labelSelector"]["matchLabels"] == names.tier_selector("chat", "small")


@pytest.mark.parametrize(
    ("gpus", "args", "tp_args"),
    [
        (1, [], ["--tensor-parallel-size", "1"]),
        (4, [], ["--tensor-parallel-size", "4"]),
        (4, ["--pipeline-parallel-size", "2"], ["--tensor-parallel-size", "2"]),
        (4, ["-tp", "4"], []),  # given: kept as the user wrote it, not repeated
        (2, ["--tensor-parallel-size=2"], []),
    ],
)
def test_vllm_tensor_parallel_size_follows_the_gpus(
    gpus: int, args: list[str], tp_args: list[str]
) -> None:
    spec = parse_zetarouter(
        {"tiers": [{"name": "t", "model": "m", "args": args,
                    "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}
    )  # fmt: skip
    assert model_server_args(spec.tiers[0]) == [
        "--model", "m", "--served-model-name", "m", "--port", "8000", *tp_args, *args,
    ]  # fmt: skip


def test_gpu_tiers_get_cpu_and_memory_requests_per_gpu_unless_set() -> None:
    spec = parse_zetarouter(
        {"tiers": [
            {"name": "a", "model": "m", "resources": {"limits": {"nvidia.com/gpu": 2}}},
            {"name": "b", "model": "m",
             "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "40Gi"},
                           "requests": {"cpu": "8"}}},
        ]}
    )  # fmt: skip
    a = containers(build_children("r", spec, build_routing_config("r", "ns", spec)), "r-a")
    assert a["model"]["resources"] == {
        "limits": {"nvidia.com/gpu": "2"},
        "requests": {"cpu": "8", "memory": "32Gi"},
    }
    b = containers(build_children("r", spec, build_routing_config("r", "ns", spec)), "r-b")
    # A set CPU request, or a memory limit (which is also the request), is the user's.
    assert b["model"]["resources"] == {
        "limits": {"nvidia.com/gpu": "1", "memory": "40Gi"},
        "requests": {"cpu": "8"},
    }


def test_pods_stop_without_losing_requests() -> None:
    out = render(
        "chat",
        NAMESPACE,
        two_tiers(
            drainDelay="8s",
            drainQuietPeriod="3s",
            drainTimeout="90s",
            timeouts={"totalSeconds": 300},
        ),
    )
    spec = pod_spec(out.children, "chat-small")
    # The longest drain, then the longest request, then a margin to exit.
    assert spec["terminationGracePeriodSeconds"] == 90 + 300 + 15
    by_name = {c["name"]: c for c in spec["containers"]}
    router = by_name["router"]
    # Both hooks talk to the admin port, which outlives the client port's drain. HTTP, not exec:
    # the kubelet performs it itself, needing nothing of the container's runtime (an exec hook
    # did not find the program where the runtime could only chroot into the container).
    assert router["lifecycle"]["preStop"] == {"httpGet": {"path": "drain/router", "port": 8081}}
    assert router["args"][7:15] == [
        "--drain-delay", "8", "--drain-quiet", "3", "--drain-timeout", "90",
        "--drain-seconds", "300",
    ]  # fmt: skip
    # The model server is not signalled while it holds requests: the router in the pod says when.
    # No leading slash: kubelets before 1.23 add one (a "//" path would miss the endpoint).
    assert by_name["model"]["lifecycle"]["preStop"] == {
        "httpGet": {"path": "drain/model-idle", "port": 8081}
    }


def test_network_policy_admits_clients_to_routers_and_only_routers_to_models() -> None:
    from zeta_router.render.networkpolicy import build_network_policy

    scraper = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    policy = build_network_policy("chat", [scraper])
    assert policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["name"] == "chat"
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == names.router_selector("chat")
    assert spec["policyTypes"] == ["Ingress"]
    clients, routers, scrapers = spec["ingress"]
    assert clients == {"ports": [{"port": "router", "protocol": "TCP"}]}  # from anywhere
    assert routers == {
        "from": [{"podSelector": {"matchLabels": names.router_selector("chat")}}],
        "ports": [{"port": "model", "protocol": "TCP"}],
    }
    assert scrapers == {
        "from": [scraper],
        "ports": [{"port": "model", "protocol": "TCP"}, {"port": "admin", "protocol": "TCP"}],
    }
    assert len(build_network_policy("chat")["spec"]["ingress"]) == 2  # no scraper: routers only
    # The operator's pods reach the routers' admin port (the learner's samples), nothing else.
    me = {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}}}
    *_, operators = build_network_policy("chat", [scraper], [me])["spec"]["ingress"]
    assert operators == {"from": [me], "ports": [{"port": "admin", "protocol": "TCP"}]}
