"""Day-2 behaviour of the operator against a real apiserver, as a real process with the RBAC we
ship: server-side apply (fields of other managers survive, ours are put back), one tier's pod
template at a time (an image change of every tier, and an operator upgrade), Prometheus
credentials sent only where their Secret allows (a real HTTP listener on 127.0.0.1 stands in for
a Prometheus of an attacker's choice), and the NetworkPolicy of a ZetaRouter.

The kubelet stand-in binds pods and reports them ready, except in namespaces labelled
``zeta.ai/kubelet-hold=new``: there pods not ready yet stay unready (the old ones keep
serving), which holds a rollout open.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from support.cluster import apply, conditions, events_for, wait_for
from support.fixtures_cluster import DRIFT_INTERVAL
from support.zetarouters import (
    TIMEOUT,
    create_zr,
    get_zr,
    hold_new_pods,
    patch_spec,
    sample,
    wait_children,
    wait_condition,
)
from zeta_router.autoscale.credentials import URLS_ANNOTATION
from zeta_router.autoscale.loop import TICK_ENV
from zeta_router.kube import MERGE_PATCH, Kube, api_path
from zeta_router.render import names
from zeta_router_dev.local.operator_proc import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("kubelet")]

ROLLOUT_TIMEOUT = 60.0


def three_drift_checks(operator: OperatorProcess) -> None:
    """Return once the operator has checked its ZetaRouter for drift three more times: by then
    it has reacted to anything it would react to (counted, not waited out)."""
    operator.wait_counted(
        "zeta_operator_reconciles_total",
        3,
        3 * DRIFT_INTERVAL + TIMEOUT,
        "three drift checks",
        trigger="drift",
    )


def deployment(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return kube.get(api_path("apps/v1", "deployments", namespace, name))


def images(dep: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["image"] for c in dep["spec"]["template"]["spec"]["containers"]}


def tier_status(zr: dict[str, Any], tier: str) -> dict[str, Any]:
    return next(t for t in zr["status"]["tiers"] if t["name"] == tier)


# ---- server-side apply ------------------------------------------------------------------------


def test_fields_of_other_managers_survive_and_ours_are_put_back(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    zr = create_zr(kube, namespace, sample())
    have = wait_children(kube, namespace, zr)
    dep_name = next(iter(have["Deployment"]))
    dep_path = api_path("apps/v1", "deployments", namespace, dep_name)
    svc_path = api_path("v1", "services", namespace, "chat")
    for obj in (deployment(kube, namespace, dep_name), kube.get(svc_path)):
        managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
        assert (names.FIELD_MANAGER, "Apply") in managers

    # A GitOps tool annotates, a policy engine labels: not ours, left alone. Someone also
    # edits fields that are ours: put back.
    kube.patch(
        dep_path,
        {
            "metadata": {
                "annotations": {"argocd.argoproj.io/tracking-id": "apps:Deployment/x"},
                "labels": {"policy.example.com/owner": "team-a"},
            },
            "spec": {"revisionHistoryLimit": 9},
        },
        MERGE_PATCH,
    )
    kube.patch(svc_path, {"metadata": {"labels": {names.COMPONENT: "tampered"}}}, MERGE_PATCH)

    def repaired() -> bool:
        dep = kube.get(dep_path)
        svc = kube.get(svc_path)
        return (
            dep["spec"]["revisionHistoryLimit"] == 3
            and svc["metadata"]["labels"][names.COMPONENT] == "router"
        )

    wait_for(repaired, 2 * DRIFT_INTERVAL + TIMEOUT, "our fields put back")
    three_drift_checks(operator)
    dep = kube.get(dep_path)
    assert dep["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] == "apps:Deployment/x"
    assert dep["metadata"]["labels"]["policy.example.com/owner"] == "team-a"
    assert dep["spec"]["revisionHistoryLimit"] == 3

    def repair_event() -> bool:
        return any(
            e["reason"] == "Repaired" and "spec.revisionHistoryLimit" in e["message"]
            for e in events_for(kube, namespace, "chat")
        )

    wait_for(repair_event, TIMEOUT, "a Repaired Event naming the field")


def test_an_object_of_someone_else_is_not_taken_over(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    theirs = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "chat-routing", "namespace": namespace},
        "data": {"mine": "yes"},
    }
    kube.create(api_path("v1", "configmaps", namespace), theirs)
    create_zr(kube, namespace, sample())
    degraded = wait_condition(kube, namespace, "chat", "Degraded", "True")
    message = conditions(degraded)["Degraded"]["message"]
    assert "ConfigMap chat-routing exists and is not managed by this ZetaRouter" in message
    three_drift_checks(operator)
    cm = kube.get(api_path("v1", "configmaps", namespace, "chat-routing"))
    assert cm["data"] == {"mine": "yes"}
    assert "ownerReferences" not in cm["metadata"]


# ---- one tier's template at a time ------------------------------------------------------------


def _one_tier_at_a_time(
    kube: Kube, namespace: str, operator: OperatorProcess, change: Any, new_router_image: str
) -> None:
    """Both tiers Ready; pods held unready; ``change()`` changes every tier's template; the
    first tier rolls while the second waits; released, the second rolls too."""
    wait_condition(kube, namespace, "chat", "Ready", "True")
    wait_condition(kube, namespace, "chat", "Progressing", "False")
    small, large = "chat-7b", "chat-14b"
    before = deployment(kube, namespace, large)
    hold_new_pods(kube, namespace, True)
    change()

    def small_rolls() -> dict[str, Any] | None:
        dep = deployment(kube, namespace, small)
        return dep if images(dep)["router"] == new_router_image else None

    wait_for(small_rolls, ROLLOUT_TIMEOUT, f"{small} to get the new router image")

    def reported() -> dict[str, Any] | None:
        zr = get_zr(kube, namespace, "chat")
        cond = conditions(zr).get("Progressing") or {}
        msg = str(cond.get("message"))
        return zr if cond.get("reason") == "RollingOut" and "waits until tier 7b" in msg else None

    zr = wait_for(reported, TIMEOUT, "Progressing to say which tier rolls and which waits")
    message = conditions(zr)["Progressing"]["message"]
    assert "tier 7b: rolling out a new pod template (router image " in message
    assert f"-> {new_router_image}" in message
    assert tier_status(zr, "14b")["rollout"] == "Waiting"
    assert tier_status(zr, "7b")["rollout"] == "RollingOut"
    # Surge first: the old pod of 7b still serves, so no tier lost its ready replica.
    assert conditions(zr)["Ready"]["status"] == "True"

    # While it waits, the larger tier keeps its template but still follows a scale.
    kube.patch(
        api_path("apps/v1", "deployments", namespace, large) + "/scale",
        {"spec": {"replicas": 2}},
        MERGE_PATCH,
    )
    three_drift_checks(operator)
    held = deployment(kube, namespace, large)
    assert held["spec"]["template"] == before["spec"]["template"]
    assert held["spec"]["replicas"] == 2
    assert deployment(kube, namespace, small)["status"].get("updatedReplicas", 0) >= 1

    hold_new_pods(kube, namespace, False)

    def large_rolls() -> bool:
        return images(deployment(kube, namespace, large))["router"] == new_router_image

    wait_for(large_rolls, ROLLOUT_TIMEOUT, f"{large} to get the new router image once 7b is ready")
    wait_condition(kube, namespace, "chat", "Progressing", "False", timeout=ROLLOUT_TIMEOUT)
    rollouts = [
        e["message"]
        for e in sorted(events_for(kube, namespace, "chat"), key=lambda e: e["firstTimestamp"])
        if e["reason"] == "RollingOut"
    ]
    assert rollouts[0].startswith("tier 7b: new pod template (router image ")
    assert rollouts[0].endswith("; then: 14b")
    assert any(m.startswith("tier 14b: new pod template") for m in rollouts[1:])


def test_a_change_of_every_tier_rolls_them_one_at_a_time(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    create_zr(kube, namespace, sample())
    image = "registry.invalid/zeta-router:next"

    def change() -> None:
        patch_spec(kube, namespace, "chat", {"router": {"image": image}})

    _one_tier_at_a_time(kube, namespace, operator, change, image)


def test_an_operator_upgrade_rolls_the_tiers_one_at_a_time(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = sample()
    body["spec"]["router"].pop("image", None)
    create_zr(kube, namespace, body)
    image = "registry.invalid/zeta-router:upgraded"

    def upgrade() -> None:
        operator.stop()
        operator.extra_args = [*operator.extra_args, f"--router-image={image}"]
        operator.start()

    _one_tier_at_a_time(kube, namespace, operator, upgrade, image)


# ---- Prometheus credentials -------------------------------------------------------------------


class PrometheusStandIn:
    """An HTTP listener on 127.0.0.1 that records every request it gets (a Prometheus of an
    attacker's choice); it answers like a Prometheus with no series."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorded.append(
                    {"path": self.path, **{k.lower(): v for k, v in self.headers.items()}}
                )
                body = json.dumps(
                    {"status": "success", "data": {"resultType": "vector", "result": []}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus_stand_in() -> Iterator[PrometheusStandIn]:
    p = PrometheusStandIn()
    yield p
    p.stop()


@pytest.fixture
def loop_operator(
    zr_crd: object, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        kubeconfig=operator_kubeconfig,
        namespaces=[namespace],
        log_path=tmp_path / "operator.log",
        drift_interval=DRIFT_INTERVAL,
        env={TICK_ENV: "1"},
    ).start()
    yield proc
    proc.stop()


def refusals(kube: Kube, namespace: str) -> int:
    return sum(
        int(e.get("count") or 1)
        for e in events_for(kube, namespace, "chat")
        if e["reason"] == "CredentialsRefused" and e["type"] == "Warning"
    )


def test_a_token_goes_only_to_the_prometheus_its_secret_names(
    kube: Kube,
    namespace: str,
    loop_operator: OperatorProcess,
    prometheus_stand_in: PrometheusStandIn,
) -> None:
    token = "s3cret-token-of-team-a"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "prom-token", "namespace": namespace},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
    apply(kube, secret)
    body = sample()
    body["spec"]["autoscaling"] = {
        "enabled": True,
        "mode": "apply",
        "interval": "1s",
        "prometheus": {
            "url": prometheus_stand_in.url,
            "authSecretRef": {"name": "prom-token"},
            "timeout": "2s",
        },
    }
    create_zr(kube, namespace, body)

    # Unmarked: refused, named rule, and that Prometheus is never contacted.
    def refused(rule: str) -> dict[str, Any] | None:
        zr = get_zr(kube, namespace, "chat")
        cond = conditions(zr).get("MetricsAvailable") or {}
        ok = cond.get("reason") == "CredentialsRefused" and rule in str(cond.get("message"))
        return zr if ok else None

    zr = wait_for(lambda: refused("is not marked"), TIMEOUT, "CredentialsRefused (unmarked)")
    assert URLS_ANNOTATION in conditions(zr)["MetricsAvailable"]["message"]
    wait_for(lambda: refusals(kube, namespace) >= 3, TIMEOUT, "three intervals refused")
    assert prometheus_stand_in.requests == []

    # Marked for another Prometheus: still refused, still never contacted.
    secret["metadata"]["annotations"] = {URLS_ANNOTATION: "http://prometheus.monitoring:9090"}
    apply(kube, secret)
    wait_for(lambda: refused("allows its token to be sent only to"), TIMEOUT, "refused (URL)")
    seen = refusals(kube, namespace)
    wait_for(lambda: refusals(kube, namespace) >= seen + 2, TIMEOUT, "two more refusals")
    assert prometheus_stand_in.requests == []

    # Marked for this one (the control: the listener does see a token when it may).
    secret["metadata"]["annotations"] = {URLS_ANNOTATION: prometheus_stand_in.url + "/"}
    apply(kube, secret)
    got = wait_for(lambda: prometheus_stand_in.requests, TIMEOUT, "a query with the token")
    assert got[0]["authorization"] == f"Bearer {token}"
    assert got[0]["path"].startswith("/api/v1/query")


# ---- the NetworkPolicy of a ZetaRouter ---------------------------------------------------------


def test_network_policy_per_zetarouter_with_namespace_rights_only(
    kube: Kube, namespace: str, zr_crd: object, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    # The operator's rights for NetworkPolicies come from a Role in this namespace only.
    rules = [
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        }
    ]
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "zeta-router-netpol", "namespace": namespace},
        "rules": rules,
    }
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "zeta-router-netpol", "namespace": namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "zeta-router-netpol"},
               "subjects": [{"kind": "ServiceAccount", "name": "zeta-router-operator",
                             "namespace": "zeta-router-system"}]}  # fmt: skip
    kube.create(api_path("rbac.authorization.k8s.io/v1", "roles", namespace), role)
    kube.create(api_path("rbac.authorization.k8s.io/v1", "rolebindings", namespace), binding)
    scraper = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    proc = OperatorProcess(
        kubeconfig=operator_kubeconfig,
        namespaces=[namespace],
        log_path=tmp_path / "operator.log",
        drift_interval=DRIFT_INTERVAL,
        extra_args=["--network-policy", f"--metrics-from={json.dumps([scraper])}"],
    ).start()
    try:
        zr = create_zr(kube, namespace, sample())
        path = api_path("networking.k8s.io/v1", "networkpolicies", namespace, "chat")
        policy = wait_for(lambda: kube.get_or_none(path), TIMEOUT, "the NetworkPolicy")
        assert policy["metadata"]["ownerReferences"][0]["uid"] == zr["metadata"]["uid"]
        spec = policy["spec"]
        assert spec["podSelector"]["matchLabels"] == names.router_selector("chat")
        sources = [rule.get("from") for rule in spec["ingress"]]
        assert sources == [
            None,  # the router port: clients, from anywhere
            [{"podSelector": {"matchLabels": names.router_selector("chat")}}],
            [scraper],
        ]
        uid = policy["metadata"]["uid"]
        kube.delete(path)
        wait_for(
            lambda: (
                (kube.get_or_none(path) or {}).get("metadata", {}).get("uid") not in (None, uid)
            ),
            2 * DRIFT_INTERVAL + TIMEOUT,
            "the NetworkPolicy to be put back",
        )
        assert conditions(get_zr(kube, namespace, "chat"))["Degraded"]["status"] == "False"
    finally:
        proc.stop()
