"""The Helm chart, rendered with the helm that `make tools` fetches: lint, the objects it renders
with default and other values, the values schema, and its agreement with manifests/ and docs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import rbac
from support.chart import CHART, REPO, VALUES, leaf_paths, value_docs, values_table
from support.tools import run_tool
from zeta_router.render import deployment as render_deployment
from zeta_router.render import names

Objects = list[dict[str, Any]]


def template(tmp_path: Path, values: Mapping[str, Any] | None = None, *args: str) -> Objects:
    cmd = ["template", "zr", str(CHART), "--namespace", "zeta-system", *args]
    if values is not None:
        f = tmp_path / f"values-{len(list(tmp_path.iterdir()))}.yaml"
        f.write_text(yaml.safe_dump(dict(values)))
        cmd += ["--values", str(f)]
    out = run_tool("helm", cmd).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def template_fails(tmp_path: Path, values: Mapping[str, Any]) -> str:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(dict(values)))
    proc = run_tool("helm", ["template", "zr", str(CHART), "--values", str(f)], check=False)
    assert proc.returncode != 0, f"helm template accepted {values}:\n{proc.stdout[:2000]}"
    return proc.stderr


def kinds(objs: Objects) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def one(objs: Objects, kind: str) -> dict[str, Any]:
    found = kinds(objs).get(kind, [])
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def operator_args(objs: Objects) -> list[str]:
    (container,) = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args


OPERATOR = "zr-zeta-router-operator"


def operator_rules(objs: Objects, namespace: str = "zeta-system") -> set[tuple[str, str, str]]:
    """What the operator's main Role grants in ``namespace`` (its ClusterRole, cluster scope)."""
    for o in objs:
        meta = o["metadata"]
        if meta["name"] != OPERATOR:
            continue
        if o["kind"] == "ClusterRole" or (
            o["kind"] == "Role" and meta.get("namespace") == namespace
        ):
            return rule_set(o["rules"])
    raise AssertionError(f"no Role {OPERATOR} in {namespace} and no ClusterRole")


def rule_set(rules: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for r in rules
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }


# ---- lint and defaults --------------------------------------------------------------------------


def test_helm_lint_strict() -> None:
    out = run_tool("helm", ["lint", "--strict", str(CHART)]).stdout
    assert "0 chart(s) failed" in out


def test_default_render(tmp_path: Path) -> None:
    objs = template(tmp_path)
    by_kind = kinds(objs)
    assert sorted(by_kind) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "KopfPeering",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    dep = one(objs, "Deployment")
    assert dep["metadata"]["namespace"] == "zeta-system"
    assert dep["spec"]["replicas"] == 1
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "zeta-router:0.1.0"
    args = container["args"]
    assert args[0] == "operator"
    # Least privilege by default: the release namespace only.
    assert "--namespace=zeta-system" in args
    assert "--all-namespaces" not in args
    assert "--peering=zeta-router" in args
    assert "--standalone" not in args
    assert "--router-image=zeta-router:0.1.0" in args
    assert "--metrics-address=0.0.0.0:9090" in args
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    sa = one(objs, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    binding = one(objs, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "zeta-system"}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": one(objs, "Role")["metadata"]["name"],
    }
    assert one(objs, "Role")["metadata"]["namespace"] == "zeta-system"
    # The one ClusterRole reads CRDs and namespaces, nothing else.
    assert rule_set(one(objs, "ClusterRole")["rules"]) == rbac.expand(
        rbac.CLUSTER_WIDE, {"cluster-read"}
    )
    peering = one(objs, "KopfPeering")
    assert peering["metadata"]["name"] == "zeta-router"
    svc = one(objs, "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}


def test_the_roles_grant_the_documented_list_and_what_manifests_grant(tmp_path: Path) -> None:
    """The two installs give the operator exactly the same rights, those of the documented list
    (tests/support/rbac.py; the tests of the operator run with manifests/)."""
    values = yaml.safe_load(VALUES.read_text())
    on = rbac.chart_conditions(values)
    objs = template(tmp_path)
    assert operator_rules(objs) == rbac.expand(rbac.NAMESPACED, on)
    manifests = REPO / "manifests"
    (role,) = [
        d
        for d in yaml.safe_load_all((manifests / "role.yaml").read_text())
        if d and d["kind"] == "Role"
    ]
    assert rule_set(role["rules"]) == rbac.expand(rbac.NAMESPACED, {"secrets-get"})
    (read,) = [
        d
        for d in yaml.safe_load_all((manifests / "rbac.yaml").read_text())
        if d and d["kind"] == "ClusterRole"
    ]
    assert rule_set(read["rules"]) == rbac.expand(rbac.CLUSTER_WIDE, {"cluster-read"})
    # Cluster scope (opt-in): the same rules everywhere, plus the ClusterKopfPeering.
    cluster = template(tmp_path, {"rbac": {"scope": "cluster"}})
    peering = {("kopf.dev", "clusterkopfpeerings", v) for _, _, v in rbac.NAMESPACED[-1].triples()}
    assert operator_rules(cluster) == (
        rbac.expand(rbac.NAMESPACED, on) | rbac.expand(rbac.CLUSTER_WIDE, on) | peering
    )
    (opt_in,) = [
        d
        for d in yaml.safe_load_all((manifests / "cluster-scope.yaml").read_text())
        if d and d["kind"] == "ClusterRole"
    ]
    assert rule_set(opt_in["rules"]) == rbac.expand(rbac.NAMESPACED, {"secrets-get"}) | peering
    for rules in (operator_rules(objs), operator_rules(cluster)):
        assert ("", "secrets", "list") not in rules


# ---- non-default values -------------------------------------------------------------------------


def test_namespace_scope_renders_roles_per_watched_namespace(tmp_path: Path) -> None:
    objs = template(
        tmp_path, {"rbac": {"scope": "namespace"}, "operator": {"watchNamespaces": ["a", "b"]}}
    )
    by_kind = kinds(objs)
    roles = {r["metadata"]["namespace"]: r for r in by_kind["Role"]}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind["RoleBinding"]}
    assert set(roles) == set(bindings) == {"a", "b"}
    assert [p["metadata"]["namespace"] for p in by_kind["KopfPeering"]] == ["a", "b"]
    assert "ClusterKopfPeering" not in by_kind
    # Only read access is cluster-wide: CRDs and namespaces, nothing that writes.
    (cluster_role,) = by_kind["ClusterRole"]
    assert {v for _, _, v in rule_set(cluster_role["rules"])} == {"get", "list", "watch"}
    assert {r for _, r, _ in rule_set(cluster_role["rules"])} == {
        "customresourcedefinitions",
        "namespaces",
    }
    role_rules = rule_set(roles["a"]["rules"])
    assert ("zeta.ai", "zetarouters", "patch") in role_rules
    assert ("kopf.dev", "kopfpeerings", "create") in role_rules
    assert not any(r == "clusterkopfpeerings" for _, r, _ in role_rules)
    args = operator_args(objs)
    assert "--namespace=a" in args
    assert "--namespace=b" in args
    assert "--all-namespaces" not in args


def test_namespace_scope_defaults_to_the_release_namespace(tmp_path: Path) -> None:
    objs = template(tmp_path, {"rbac": {"scope": "namespace", "clusterRead": False}})
    by_kind = kinds(objs)
    assert "ClusterRole" not in by_kind
    assert "ClusterRoleBinding" not in by_kind
    assert [r["metadata"]["namespace"] for r in by_kind["Role"]] == ["zeta-system"]
    assert "--namespace=zeta-system" in operator_args(objs)


def test_replicas_and_peering(tmp_path: Path) -> None:
    objs = template(tmp_path, {"replicaCount": 3, "operator": {"peering": {"name": "zr-peers"}}})
    assert one(objs, "Deployment")["spec"]["replicas"] == 3
    assert "--peering=zr-peers" in operator_args(objs)
    assert one(objs, "KopfPeering")["metadata"] == {
        **one(objs, "KopfPeering")["metadata"],
        "name": "zr-peers",
        "namespace": "zeta-system",
    }
    cluster = template(tmp_path, {"rbac": {"scope": "cluster"}})
    assert one(cluster, "ClusterKopfPeering")["metadata"]["name"] == "zeta-router"

    standalone = template(tmp_path, {"operator": {"peering": {"enabled": False}}})
    assert "--standalone" in operator_args(standalone)
    assert "KopfPeering" not in kinds(standalone)

    err = template_fails(tmp_path, {"replicaCount": 2, "operator": {"peering": {"enabled": False}}})
    assert "operator.peering.enabled" in err


def test_operator_settings_reach_its_command_line(tmp_path: Path) -> None:
    objs = template(
        tmp_path,
        {
            "image": {"repository": "registry.example/zeta-router", "tag": "9.9"},
            "operator": {
                "driftInterval": 10,
                "workers": 3,
                "logFormat": "text",
                "verbose": True,
                "routerImage": "registry.example/router:1",
                "extraArgs": ["--priority=5"],
                "metricsPort": 9100,
            },
        },
    )
    args = operator_args(objs)
    for expected in (
        "--drift-interval=10",
        "--workers=3",
        "--log-format=text",
        "--verbose",
        "--router-image=registry.example/router:1",
        "--priority=5",
        "--metrics-address=0.0.0.0:9100",
    ):
        assert expected in args
    (container,) = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/zeta-router:9.9"


def test_monitors_only_when_enabled(tmp_path: Path) -> None:
    monitor_kinds = {"ServiceMonitor", "PodMonitor"}
    assert not monitor_kinds & set(kinds(template(tmp_path)))

    objs = template(
        tmp_path,
        {"monitoring": {"serviceMonitor": {"enabled": True}, "labels": {"release": "kps"}}},
    )
    monitors = {m["metadata"]["name"]: m for m in kinds(objs)["ServiceMonitor"]}
    # The routers' admin port is on no Service: a PodMonitor scrapes it.
    (routers_pm,) = kinds(objs)["PodMonitor"]
    assert [e["port"] for e in routers_pm["spec"]["podMetricsEndpoints"]] == [
        render_deployment.ROUTER_ADMIN_PORT_NAME
    ]
    assert len(monitors) == 2
    for m in monitors.values():
        assert m["apiVersion"] == "monitoring.coreos.com/v1"
        assert m["metadata"]["labels"]["release"] == "kps"
    operator_sm = monitors["zr-zeta-router-operator"]
    svc = one(objs, "Service")
    assert (
        operator_sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    )
    workloads = monitors["zr-zeta-router-zetarouters"]["spec"]
    # Selects the Services the operator renders, with the label contract of the control loop.
    # (the tier Services: the entry Service carries the client API only, no /metrics).
    assert workloads["selector"]["matchLabels"] == {
        names.NAME: names.APP,
        names.MANAGED_BY: names.APP,
        names.COMPONENT: "model-server",
    }
    # The served namespaces: the release namespace by default, any with cluster scope.
    assert workloads["namespaceSelector"] == {"matchNames": ["zeta-system"]}
    cluster = template(
        tmp_path,
        {"rbac": {"scope": "cluster"}, "monitoring": {"serviceMonitor": {"enabled": True}}},
    )
    (cluster_workloads,) = [
        m for m in kinds(cluster)["ServiceMonitor"] if m["metadata"]["name"].endswith("zetarouters")
    ]
    assert cluster_workloads["spec"]["namespaceSelector"] == {"any": True}
    assert workloads["targetLabels"] == [names.COMPONENT]
    assert workloads["podTargetLabels"] == [names.INSTANCE, names.TIER]
    sm_endpoints = {e["port"]: e for e in workloads["endpoints"]}
    assert set(sm_endpoints) == {"http"}
    (relabel,) = routers_pm["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert relabel["replacement"] == "router"

    objs = template(
        tmp_path,
        {
            "monitoring": {"podMonitor": {"enabled": True}},
            "operator": {"watchNamespaces": ["team-a"]},
        },
    )
    pm = one(objs, "PodMonitor")["spec"]
    assert "ServiceMonitor" not in kinds(objs)
    assert pm["namespaceSelector"] == {"matchNames": ["team-a"]}
    assert pm["podTargetLabels"] == [names.INSTANCE, names.COMPONENT, names.TIER]
    endpoints = {e["port"]: e for e in pm["podMetricsEndpoints"]}
    assert set(endpoints) == {
        render_deployment.MODEL_PORT_NAME,
        render_deployment.ROUTER_ADMIN_PORT_NAME,
    }
    (relabel,) = endpoints[render_deployment.ROUTER_ADMIN_PORT_NAME]["relabelings"]
    assert relabel["targetLabel"] == "app_kubernetes_io_component"
    assert relabel["replacement"] == "router"

    err = template_fails(
        tmp_path,
        {"monitoring": {"podMonitor": {"enabled": True}, "serviceMonitor": {"enabled": True}}},
    )
    assert "monitoring.serviceMonitor.zetaRouters" in err


def test_pod_monitor_ports_are_the_ports_the_renderer_names() -> None:
    """The PodMonitor's port names and selector match what the operator puts on tier pods."""
    from zeta_router.api.models import parse_zetarouter
    from zeta_router.render.children import render

    sample = yaml.safe_load((REPO / "manifests/samples/zetarouter-cpu.yaml").read_text())
    out = render("chat-cpu", "default", parse_zetarouter(sample))
    deployments = [c for c in out.children if c["kind"] == "Deployment"]
    assert deployments
    for dep in deployments:
        pod = dep["spec"]["template"]
        assert pod["metadata"]["labels"][names.MANAGED_BY] == names.APP
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        assert ports == {
            render_deployment.MODEL_PORT_NAME,
            render_deployment.ROUTER_PORT_NAME,
            render_deployment.ROUTER_ADMIN_PORT_NAME,
        }
    # And the ServiceMonitor's: the tier Services carry the model port; the routers' admin port
    # is on no Service (the PodMonitor of the routers scrapes it from the pods).
    services = [c for c in out.children if c["kind"] == "Service"]
    tier_services = [
        s for s in services if s["metadata"]["labels"][names.COMPONENT] == "model-server"
    ]
    assert tier_services
    for svc in services:
        assert render_deployment.ROUTER_ADMIN_PORT_NAME not in {
            p["name"] for p in svc["spec"]["ports"]
        }
    for svc in tier_services:
        assert {p["name"] for p in svc["spec"]["ports"]} == {"http"}


def test_network_policy(tmp_path: Path) -> None:
    assert "NetworkPolicy" in kinds(template(tmp_path))  # on by default
    assert "NetworkPolicy" not in kinds(template(tmp_path, {"networkPolicy": {"enabled": False}}))
    peer = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    objs = template(tmp_path, {"networkPolicy": {"enabled": True, "metricsFrom": [peer]}})
    np = one(objs, "NetworkPolicy")["spec"]
    dep = one(objs, "Deployment")
    assert np["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert np["policyTypes"] == ["Ingress", "Egress"]
    assert np["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [peer]}]
    egress_ports = {(p["port"], p["protocol"]) for p in np["egress"][0]["ports"]}
    assert {(53, "UDP"), (443, "TCP"), (6443, "TCP")} <= egress_ports

    open_egress = template(
        tmp_path, {"networkPolicy": {"enabled": True, "egress": {"enabled": False}}}
    )
    np = one(open_egress, "NetworkPolicy")["spec"]
    assert np["policyTypes"] == ["Ingress"]
    assert "egress" not in np


def test_dashboard_configmap(tmp_path: Path) -> None:
    assert "ConfigMap" not in kinds(template(tmp_path))
    objs = template(
        tmp_path,
        {"dashboard": {"enabled": True, "namespace": "grafana", "annotations": {"f": "LLM"}}},
    )
    cm = one(objs, "ConfigMap")
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"f": "LLM"}
    source = json.loads((CHART / "dashboards" / "zeta-router.json").read_text())
    assert json.loads(cm["data"]["zeta-router.json"]) == source


# ---- the values schema --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "problem"),
    [
        ({"rbac": {"scope": "everywhere"}}, "/rbac/scope", "'cluster', 'namespace'"),
        ({"replicaCount": -1}, "/replicaCount", "minimum"),
        ({"replicaCount": "two"}, "/replicaCount", "integer"),
        ({"operator": {"logFmt": "json"}}, "/operator", "logFmt"),
        ({"operator": {"logFormat": "xml"}}, "/operator/logFormat", "json"),
        ({"operator": {"driftInterval": 0}}, "/operator/driftInterval", "exclusiveMinimum"),
        ({"operator": {"metricsPort": 70000}}, "/operator/metricsPort", "maximum"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "IfNotPresent"),
        ({"monitoring": {"interval": "soon"}}, "/monitoring/interval", "pattern"),
        ({"dashboard": {"enabled": "yes"}}, "/dashboard/enabled", "boolean"),
        ({"unknownTopLevel": 1}, "", "unknownTopLevel"),
    ],
)
def test_schema_rejects_bad_values(
    tmp_path: Path, values: dict[str, Any], field: str, problem: str
) -> None:
    err = template_fails(tmp_path, values)
    assert "values don't meet the specifications of the schema" in err
    assert f"at '{field}'" in err
    assert problem in err


def test_lint_reports_the_bad_field(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump({"rbac": {"scope": "global"}}))
    proc = run_tool("helm", ["lint", str(CHART), "--values", str(f)], check=False)
    assert proc.returncode != 0
    assert "at '/rbac/scope'" in proc.stdout + proc.stderr


def test_schema_is_strict_everywhere() -> None:
    """Every object of the schema that lists its properties refuses unknown ones, except the
    ones holding Kubernetes objects (resources, security contexts, selectors...)."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: Mapping[str, Any], path: str) -> list[str]:
        lax = []
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties") is not False and path not in {
                "operator.resources",
            }:
                lax.append(path)
            for k, sub in node["properties"].items():
                lax += walk(sub, f"{path}.{k}" if path else k)
        if isinstance(node.get("items"), Mapping):
            lax += walk(node["items"], f"{path}[]")
        return lax

    assert walk(schema, "") == ["operator.extraEnv[]"]


def test_every_value_has_a_schema_and_a_description() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load(VALUES.read_text())
    for path in leaf_paths(values):
        node: Mapping[str, Any] = schema
        described = False
        for part in path.split("."):
            if node.get("type") == "object" and "properties" not in node:
                break  # a Kubernetes object (resources, security context): free-form inside
            assert part in node.get("properties", {}), f"{path}: not in values.schema.json"
            node = node["properties"][part]
            described = described or bool(node.get("description"))
        assert described, f"{path}: no description in values.schema.json"
    documented = {d.path for d in value_docs()}
    for path in leaf_paths(values):
        parts = path.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        assert prefixes & documented, f"{path}: no `# --` comment in values.yaml"


def test_values_doc_parser_reads_paths_defaults_and_continuations() -> None:
    docs = value_docs("a:\n  # -- first\n  # line two\n  b: 3\n  c: x\n# -- top\nd: []\n")
    assert [(d.path, d.default, d.text) for d in docs] == [
        ("a.b", 3, "first line two"),
        ("d", [], "top"),
    ]


def test_docs_carry_the_values_table() -> None:
    text = (REPO / "docs" / "install.md").read_text()
    assert values_table() in text, (
        "docs/install.md: the values table differs from charts/zeta-router/values.yaml; "
        "print it with `.venv/bin/python tests/support/chart.py`"
    )


# ---- agreement with the rest of the repository --------------------------------------------------


def test_chart_peering_crds_are_manifests_peering() -> None:
    chart = [d for d in yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()) if d]
    shipped = [
        d for d in yaml.safe_load_all((REPO / "manifests" / "peering.yaml").read_text()) if d
    ]
    assert chart == shipped, "copy manifests/peering.yaml to charts/zeta-router/crds/"


def test_chart_crds_are_the_generated_ones() -> None:
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert chart == ["kopf-peering.yaml", "zetarouter.yaml"]
    # zetarouter.yaml's content is compared with `zeta-router crd` in test_crd.py.


def test_chart_versions_follow_the_package() -> None:
    import zeta_router

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == zeta_router.__version__
    assert chart["version"] == zeta_router.__version__


def test_namespace_patterns(tmp_path: Path) -> None:
    # Cluster scope: patterns are passed to kopf; no peering object for a pattern.
    objs = template(
        tmp_path,
        {"rbac": {"scope": "cluster"}, "operator": {"watchNamespaces": ["team-*", "ops"]}},
    )
    assert "--namespace=team-*" in operator_args(objs)
    assert [p["metadata"]["namespace"] for p in kinds(objs)["KopfPeering"]] == ["ops"]
    assert "ClusterRole" in kinds(objs)
    # Namespace scope needs a Role per namespace: a pattern cannot have one.
    err = template_fails(
        tmp_path, {"rbac": {"scope": "namespace"}, "operator": {"watchNamespaces": ["team-*"]}}
    )
    assert "operator.watchNamespaces" in err
    assert "team-*" in err


def test_zetarouter_network_policies_follow_the_chart(tmp_path: Path) -> None:
    assert "--network-policy" in operator_args(template(tmp_path))  # on by default
    disabled = template(tmp_path, {"networkPolicy": {"enabled": False}})
    assert "--network-policy" not in operator_args(disabled)
    assert ("networking.k8s.io", "networkpolicies", "create") not in operator_rules(disabled)
    peer = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    objs = template(tmp_path, {"networkPolicy": {"enabled": True, "metricsFrom": [peer]}})
    args = operator_args(objs)
    assert "--network-policy" in args
    (flag,) = [a for a in args if a.startswith("--metrics-from=")]
    assert json.loads(flag.removeprefix("--metrics-from=")) == [peer]
    # The operator's own pods (its learner reads the routers' admin port), by the Deployment's
    # own selector in the release's namespace.
    (flag,) = [a for a in args if a.startswith("--operator-from=")]
    (me,) = json.loads(flag.removeprefix("--operator-from="))
    deployment = one(objs, "Deployment")
    assert me["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert me["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": deployment["metadata"]["namespace"]
    }
    rules = operator_rules(objs)
    for verb in ("get", "list", "watch", "create", "patch", "delete"):
        assert ("networking.k8s.io", "networkpolicies", verb) in rules
    off = template(tmp_path, {"networkPolicy": {"enabled": True, "zetaRouters": False}})
    assert "--network-policy" not in operator_args(off)
    assert not any(r == "networkpolicies" for _, r, _ in operator_rules(off))


def test_prometheus_allowed_endpoints_become_flags(tmp_path: Path) -> None:
    assert not [a for a in operator_args(template(tmp_path)) if "--prometheus-endpoint" in a]
    objs = template(
        tmp_path, {"prometheusAllowedEndpoints": ["prometheus.monitoring.svc", "10.96.0.0/12"]}
    )
    args = operator_args(objs)
    assert "--prometheus-endpoint=prometheus.monitoring.svc" in args
    assert "--prometheus-endpoint=10.96.0.0/12" in args


def test_prometheus_credentials_policies_and_their_rbac(tmp_path: Path) -> None:
    default = template(tmp_path)
    assert "--prometheus-secrets=annotated" in operator_args(default)
    assert ("", "secrets", "get") in operator_rules(default)

    none = template(
        tmp_path, {"prometheusAuth": {"policy": "none"}, "podPolicy": {"secretRefs": "any"}}
    )
    assert "--prometheus-secrets=none" in operator_args(none)
    for role in kinds(none).get("ClusterRole", []) + kinds(none).get("Role", []):
        # Only `create`, for the routers' signing key; nothing that reads a Secret.
        assert {v for _, r, v in rule_set(role["rules"]) if r == "secrets"} <= {"create"}

    allowed = [
        {"namespace": "team-a", "name": "prom", "url": "http://prometheus.monitoring:9090"},
        {"namespace": "team-b", "name": "tok", "url": "https://prom.example:9090"},
    ]
    values = {
        "rbac": {"scope": "cluster"},
        "prometheusAuth": {"policy": "allowList", "allowedSecrets": allowed},
        "podPolicy": {"secretRefs": "none"},
    }
    objs = template(tmp_path, values)
    args = operator_args(objs)
    assert "--prometheus-secrets=allow-list" in args
    assert "--prometheus-secret=team-a/prom=http://prometheus.monitoring:9090" in args
    assert "--prometheus-secret=team-b/tok=https://prom.example:9090" in args
    # Cluster-wide, no Secret is read; per namespace, only the named Secrets.
    cluster_rules = operator_rules(objs)
    assert {v for _, r, v in cluster_rules if r == "secrets"} == {"create"}
    roles = {r["metadata"]["namespace"]: r for r in kinds(objs)["Role"]}
    assert set(roles) == {"team-a", "team-b"}
    assert roles["team-a"]["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["prom"], "verbs": ["get"]}
    ]
    bindings = {b["metadata"]["namespace"]: b for b in kinds(objs)["RoleBinding"]}
    assert bindings["team-b"]["roleRef"]["name"] == roles["team-b"]["metadata"]["name"]


def test_prometheus_allow_list_mistakes_are_refused(tmp_path: Path) -> None:
    entry = {"namespace": "elsewhere", "name": "prom", "url": "http://p:9090"}
    message = template_fails(
        tmp_path,
        {
            "rbac": {"scope": "namespace"},
            "operator": {"watchNamespaces": ["team-a"]},
            "prometheusAuth": {"policy": "allowList", "allowedSecrets": [entry]},
        },
    )
    assert "elsewhere/prom is in a namespace the operator does not serve" in message
    message = template_fails(tmp_path, {"prometheusAuth": {"allowedSecrets": [entry]}})
    assert "policy is not allowList" in message
    message = template_fails(
        tmp_path,
        {"prometheusAuth": {"policy": "allowList", "allowedSecrets": [{**entry, "url": "p:9"}]}},
    )
    assert "prometheusAuth" in message


def test_pod_policy_values_become_the_operators_flags(tmp_path: Path) -> None:
    default = [
        a for a in operator_args(template(tmp_path)) if "cache-volume" in a or "secret-" in a
    ]
    assert default == [
        "--allowed-cache-volume=persistentVolumeClaim",
        "--allowed-cache-volume=emptyDir",
        "--allowed-cache-volume=ephemeral",
        "--secret-refs=marked",
    ]
    policy = {
        "modelCacheVolumeTypes": [],
        "allowRoot": True,
        "modelImagePrefixes": ["registry.example.com/models/"],
        "routerImagePrefixes": ["registry.example.com/zeta/", "ghcr.io/acme/"],
        "secretRefs": "none",
    }
    args = operator_args(template(tmp_path, {"podPolicy": policy}))
    for flag in (
        "--allowed-cache-volume=",
        "--allow-root",
        "--allowed-model-image-prefix=registry.example.com/models/",
        "--allowed-router-image-prefix=registry.example.com/zeta/",
        "--allowed-router-image-prefix=ghcr.io/acme/",
        "--secret-refs=none",
    ):
        assert flag in args, flag
    # The operator reads them as the chart means them.
    import argparse

    from zeta_router.controller import render_args

    parser = argparse.ArgumentParser()
    render_args.add_arguments(parser)
    parsed = render_args.pod_policy(parser.parse_args([a for a in args if a.startswith("--all")]))
    assert parsed.cache_volume_types == ()
    assert parsed.allow_root is True
    assert parsed.router_image_prefixes == ("registry.example.com/zeta/", "ghcr.io/acme/")
    assert "secretRefs" in template_fails(tmp_path, {"podPolicy": {"secretRefs": "some"}})
