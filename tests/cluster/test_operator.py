"""The operator against a real apiserver, running as a real process with the RBAC we ship.

Each test gets its own namespace and its own operator process serving it (drift interval 3 s).
The kubelet stand-in binds the pods and reports them ready (not in namespaces labelled
``zeta.ai/kubelet-hold=true``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import zetarouters
from support.cluster import (
    REPO,
    apply,
    children,
    condition_is,
    conditions,
    events_for,
    load_yaml_docs,
    wait_for,
)
from support.fixtures_cluster import DRIFT_INTERVAL
from support.zetarouters import (
    TIMEOUT,
    create_zr,
    get_zr,
    patch_spec,
    sample,
    wait_condition,
)
from zeta_router.api.models import parse_zetarouter
from zeta_router.api.routing import CONFIGMAP_KEY
from zeta_router.kube import MERGE_PATCH, ApiError, Kube, api_path
from zeta_router_dev.local.operator_proc import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("kubelet")]

# How many of the operator's drift checks must pass after a change before a test may conclude
# that something did not happen: the first may have started before the change.
SETTLE_DRIFT_CHECKS = 2

MANAGED = {
    "app.kubernetes.io/name": "zeta-router",
    "app.kubernetes.io/managed-by": "zeta-router",
}


def zr_path(namespace: str, name: str | None = None) -> str:
    return api_path("zeta.ai/v1alpha1", "zetarouters", namespace, name)


def tier_names(body: dict[str, Any]) -> list[str]:
    return [t["name"] for t in body["spec"]["tiers"]]


def expected_names(body: dict[str, Any]) -> dict[str, set[str]]:
    name = body["metadata"]["name"]
    tiers = tier_names(body)
    return {
        "Deployment": {f"{name}-{t}" for t in tiers},
        "Service": {name}
        | {f"{name}-{t}" for t in tiers}
        | {f"{name}-{t}-replicas" for t in tiers},
        "ConfigMap": {f"{name}-routing"},
    }


def wait_children(kube: Kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    # Against the object names spelled out here, not the renderer's own naming functions.
    return zetarouters.wait_children(kube, namespace, body, expected_names(body))


def routing(cm: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(cm["data"][CONFIGMAP_KEY])
    return doc


def hold_pods(kube: Kube, namespace: str, hold: bool) -> None:
    kube.patch(
        api_path("v1", "namespaces", None, namespace),
        {"metadata": {"labels": {"zeta.ai/kubelet-hold": "true" if hold else None}}},
        MERGE_PATCH,
    )


def reasons(kube: Kube, namespace: str, name: str) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in events_for(kube, namespace, name)]


def drift_checks(operator: OperatorProcess) -> float:
    """How many drift reconciliations the operator has finished, whatever their result."""
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith("zeta_operator_reconciles_total{") and 'trigger="drift"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def settle(
    kube: Kube, namespace: str, operator: OperatorProcess, names: list[str] | None = None
) -> None:
    """Wait until the operator has seen the latest spec of ``names`` (their observedGeneration)
    and then finished ``SETTLE_DRIFT_CHECKS`` drift checks of each: only then is "the operator
    did not change X" a fact rather than a hope that it has not got round to it yet."""
    for name in names or []:
        wait_for(
            lambda n=name: (
                (zr := get_zr(kube, namespace, n)).get("status", {}).get("observedGeneration")
                == zr["metadata"]["generation"]
            ),
            TIMEOUT,
            f"the operator to observe the latest spec of {name}",
        )
    count = len(kube.list(zr_path(namespace))["items"])
    start = drift_checks(operator)
    wait_for(
        lambda: drift_checks(operator) >= start + SETTLE_DRIFT_CHECKS * max(count, 1),
        SETTLE_DRIFT_CHECKS * DRIFT_INTERVAL * max(count, 1) + TIMEOUT,
        f"{SETTLE_DRIFT_CHECKS} drift checks after the change",
    )


# ---- tests ------------------------------------------------------------------------------------


def test_sample_gets_all_children_with_owner_references_and_labels(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    zr = create_zr(kube, namespace, sample())
    parsed = parse_zetarouter(zr)
    have = wait_children(kube, namespace, zr)
    uid = zr["metadata"]["uid"]
    tiers = tier_names(zr)
    for kind, objs in have.items():
        for obj in objs.values():
            (ref,) = obj["metadata"]["ownerReferences"]
            assert ref["uid"] == uid, obj["metadata"]["name"]
            assert ref["kind"] == "ZetaRouter"
            assert ref["controller"] is True
            labels = obj["metadata"]["labels"]
            assert labels.items() >= MANAGED.items(), (kind, labels)
            assert labels["app.kubernetes.io/instance"] == "chat"
    for tier in tiers:
        dep = have["Deployment"][f"chat-{tier}"]
        assert dep["metadata"]["labels"]["zeta.ai/tier"] == tier
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["zeta.ai/tier"] == tier
        assert pod_labels.items() >= MANAGED.items()
        assert have["Service"][f"chat-{tier}"]["metadata"]["labels"]["zeta.ai/tier"] == tier
        assert dep["spec"]["replicas"] == parsed.tier(tier).replicas.start
    config = routing(have["ConfigMap"]["chat-routing"])
    assert [t["name"] for t in config["tiers"]] == tiers
    wait_for(lambda: ("Normal", "Created") in reasons(kube, namespace, "chat"), TIMEOUT, "Created")
    wait_for(
        lambda: (
            'zeta_operator_reconciles_total{result="ok",trigger="create"} 1.0' in operator.metrics()
        ),
        TIMEOUT,
        "the reconciliation in the operator's metrics",
    )


def test_status_follows_pod_readiness(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    hold_pods(kube, namespace, True)
    zr = create_zr(kube, namespace, sample())
    wait_children(kube, namespace, zr)
    held = wait_condition(kube, namespace, "chat", "Progressing", "True")
    assert condition_is(held, "Ready", "False")
    assert condition_is(held, "SpecValid", "True")
    assert "tiers without a ready replica" in conditions(held)["Ready"]["message"]

    hold_pods(kube, namespace, False)
    ready = wait_condition(kube, namespace, "chat", "Ready", "True")
    wait_condition(kube, namespace, "chat", "Progressing", "False")
    status = ready["status"]
    assert status["observedGeneration"] == ready["metadata"]["generation"]
    assert conditions(ready)["Ready"]["observedGeneration"] == ready["metadata"]["generation"]
    for tier in status["tiers"]:
        assert tier["readyReplicas"] == tier["replicas"] >= 1, tier
    assert [t["name"] for t in status["tiers"]] == tier_names(zr)
    assert condition_is(ready, "Degraded", "False")


def test_threshold_change_updates_the_configmap_and_no_pod_template(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    zr = create_zr(kube, namespace, sample())
    before = wait_children(kube, namespace, zr)
    wait_condition(kube, namespace, "chat", "Ready", "True")
    before = children(kube, namespace, "chat")
    old_config = routing(before["ConfigMap"]["chat-routing"])

    contexts = copy.deepcopy(zr["spec"]["router"]["contexts"])
    first = contexts[0]
    first["thresholds"] = [round(x * 0.9 + 0.01, 4) for x in first["thresholds"]]
    patch_spec(kube, namespace, "chat", {"router": {"contexts": contexts}})

    def updated() -> dict[str, Any] | None:
        cm = kube.get(api_path("v1", "configmaps", namespace, "chat-routing"))
        cfg = routing(cm)
        ctx = next(c for c in cfg["contexts"] if c["name"] == first["name"])
        return cfg if ctx["thresholds"] == first["thresholds"] else None

    new_config = wait_for(updated, TIMEOUT, "the new thresholds in the routing ConfigMap")
    assert new_config["generation"] == old_config["generation"] + 1
    settle(kube, namespace, operator, ["chat"])
    after = children(kube, namespace, "chat")
    for dep_name, dep in before["Deployment"].items():
        now = after["Deployment"][dep_name]
        assert now["metadata"]["generation"] == dep["metadata"]["generation"], dep_name
        assert now["spec"]["template"] == dep["spec"]["template"], dep_name
    assert ("Normal", "Updated") in reasons(kube, namespace, "chat")


def test_image_change_rolls_only_that_tier(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    zr = create_zr(kube, namespace, sample())
    before = wait_children(kube, namespace, zr)
    first, *others = tier_names(zr)
    tiers = copy.deepcopy(zr["spec"]["tiers"])
    tiers[0]["image"] = "registry.invalid/zeta/test-model-server:changed"
    patch_spec(kube, namespace, "chat", {"tiers": tiers})

    def rolled() -> dict[str, Any] | None:
        dep = kube.get(api_path("apps/v1", "deployments", namespace, f"chat-{first}"))
        images = [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]]
        return dep if tiers[0]["image"] in images else None

    wait_for(rolled, TIMEOUT, f"the new image in chat-{first}")
    settle(kube, namespace, operator, ["chat"])
    after = children(kube, namespace, "chat")
    for tier in others:
        old, new = before["Deployment"][f"chat-{tier}"], after["Deployment"][f"chat-{tier}"]
        assert new["metadata"]["generation"] == old["metadata"]["generation"], tier


def test_deleted_children_are_recreated(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    zr = create_zr(kube, namespace, sample())
    before = wait_children(kube, namespace, zr)
    tier = tier_names(zr)[0]
    victims = [
        api_path("apps/v1", "deployments", namespace, f"chat-{tier}"),
        api_path("v1", "services", namespace, "chat"),
        api_path("v1", "configmaps", namespace, "chat-routing"),
    ]
    old_uids = {
        before["Deployment"][f"chat-{tier}"]["metadata"]["uid"],
        before["Service"]["chat"]["metadata"]["uid"],
        before["ConfigMap"]["chat-routing"]["metadata"]["uid"],
    }
    for path in victims:
        kube.delete(path)

    def recreated() -> bool:
        got = [kube.get_or_none(p) for p in victims]
        return all(o is not None and o["metadata"]["uid"] not in old_uids for o in got)

    wait_for(recreated, 2 * DRIFT_INTERVAL + TIMEOUT, "the deleted children to be recreated")
    wait_children(kube, namespace, zr)
    wait_for(
        lambda: ("Normal", "Repaired") in reasons(kube, namespace, "chat"), TIMEOUT, "Repaired"
    )


def unchanged_drift_checks(operator: OperatorProcess) -> float:
    """Drift checks that found, from the operator's watch alone, that nothing had moved."""
    prefix = 'zeta_operator_reconciles_total{result="unchanged",trigger="drift"} '
    for line in operator.metrics().splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_an_idle_zetarouter_is_checked_from_the_watch_and_an_edit_is_still_put_back(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    zr = create_zr(kube, namespace, sample())
    wait_children(kube, namespace, zr)
    tier = tier_names(zr)[0]
    # Nothing moves: the checks conclude so without listing or applying anything.
    wait_for(lambda: unchanged_drift_checks(operator) >= 2, 4 * DRIFT_INTERVAL + TIMEOUT, "checks")
    path = api_path("v1", "services", namespace, f"chat-{tier}")
    kube.patch(path, {"metadata": {"labels": {"zeta.ai/tier": "edited"}}}, MERGE_PATCH)
    # The edit moved the Service: the next check takes the full path and puts the label back.
    wait_for(
        lambda: kube.get(path)["metadata"]["labels"]["zeta.ai/tier"] == tier,
        2 * DRIFT_INTERVAL + TIMEOUT,
        "the edited label to be put back",
    )
    # And once repaired, the checks are from the watch again.
    start = unchanged_drift_checks(operator)
    wait_for(
        lambda: unchanged_drift_checks(operator) >= start + 2,
        4 * DRIFT_INTERVAL + TIMEOUT,
        "checks from the watch after the repair",
    )


def test_replicas_are_the_users_within_min_and_max(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    zr = create_zr(kube, namespace, sample())
    wait_children(kube, namespace, zr)
    tier = zr["spec"]["tiers"][0]
    bounds = tier["replicas"]
    path = api_path("apps/v1", "deployments", namespace, f"chat-{tier['name']}")

    def replicas() -> int:
        return int(kube.get(path)["spec"]["replicas"])

    kube.patch(f"{path}/scale", {"spec": {"replicas": bounds["max"] + 3}}, MERGE_PATCH)
    wait_for(
        lambda: replicas() == bounds["max"], 2 * DRIFT_INTERVAL + TIMEOUT, "replicas clamped to max"
    )

    if bounds["max"] > bounds["min"]:
        # Within the bounds the count belongs to the user (autoscaling is off in the sample).
        wanted = bounds["min"] if bounds["initial"] != bounds["min"] else bounds["max"]
        kube.patch(f"{path}/scale", {"spec": {"replicas": wanted}}, MERGE_PATCH)
        settle(kube, namespace, operator, ["chat"])
        assert replicas() == wanted


def test_schema_invalid_spec_is_rejected_by_the_apiserver(
    kube: Kube, namespace: str, zr_crd: object
) -> None:
    bad_engine = sample("bad-engine")
    bad_engine["spec"]["tiers"][0]["engine"] = "tensorflow"
    bad_type = sample("bad-type")
    bad_type["spec"]["tiers"][0]["replicas"]["max"] = "many"
    no_tiers = sample("no-tiers")
    no_tiers["spec"]["tiers"] = []
    for body in (bad_engine, bad_type, no_tiers):
        with pytest.raises(ApiError) as err:
            create_zr(kube, namespace, body)
        assert err.value.status == 422, body["metadata"]["name"]
    assert kube.list(zr_path(namespace))["items"] == []


def test_semantically_invalid_spec_changes_no_child(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    zr = create_zr(kube, namespace, sample())
    wait_children(kube, namespace, zr)
    wait_condition(kube, namespace, "chat", "Ready", "True")
    before = children(kube, namespace, "chat")

    tiers = copy.deepcopy(zr["spec"]["tiers"])
    tiers[1]["replicas"]["min"] = tiers[1]["replicas"]["max"] + 1
    tiers[1]["replicas"]["initial"] = tiers[1]["replicas"]["max"] + 1
    tiers[0]["image"] = "registry.invalid/must-not-be-applied:1"
    patch_spec(kube, namespace, "chat", {"tiers": tiers})

    invalid = wait_condition(kube, namespace, "chat", "SpecValid", "False")
    message = conditions(invalid)["SpecValid"]["message"]
    assert "spec.tiers[1].replicas" in message, message
    assert conditions(invalid)["SpecValid"]["reason"] == "InvalidSpec"
    assert invalid["status"]["observedGeneration"] == invalid["metadata"]["generation"]
    wait_for(
        lambda: ("Warning", "InvalidSpec") in reasons(kube, namespace, "chat"),
        TIMEOUT,
        "a Warning Event InvalidSpec",
    )
    settle(kube, namespace, operator, ["chat"])
    after = children(kube, namespace, "chat")
    for kind, objs in before.items():
        assert set(after[kind]) == set(objs), kind
        for name, obj in objs.items():
            now = after[kind][name]
            if kind == "Deployment":
                # Its status may still move (the controller-manager); its spec must not.
                assert now["metadata"]["generation"] == obj["metadata"]["generation"], name
                assert now["spec"] == obj["spec"], name
            else:
                assert now["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    # Repeats of the same problem are counted on one Event, not posted again and again.
    warnings = [
        e
        for e in events_for(kube, namespace, "chat")
        if e["reason"] == "InvalidSpec" and e["type"] == "Warning"
    ]
    assert len(warnings) == 1

    # Fixed: accepted again and applied.
    tiers[1]["replicas"]["min"] = 1
    tiers[1]["replicas"]["initial"] = 1
    patch_spec(kube, namespace, "chat", {"tiers": tiers})
    wait_condition(kube, namespace, "chat", "SpecValid", "True")


def test_pod_policy_refuses_a_hostpath_cache_and_changes_no_child(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """The installer's pod policy (defaults: no hostPath model cache), enforced by the operator
    with its default flags: SpecValid=False, a Warning Event naming the rule, the children as
    they were."""
    zr = create_zr(kube, namespace, sample())
    wait_children(kube, namespace, zr)
    wait_condition(kube, namespace, "chat", "Ready", "True")
    before = children(kube, namespace, "chat")

    tiers = copy.deepcopy(zr["spec"]["tiers"])
    tiers[0]["modelCache"] = {"hostPath": {"path": "/"}}
    tiers[1]["image"] = "registry.invalid/must-not-be-applied:1"
    patch_spec(kube, namespace, "chat", {"tiers": tiers})

    invalid = wait_condition(kube, namespace, "chat", "SpecValid", "False")
    cond = conditions(invalid)["SpecValid"]
    assert cond["reason"] == "PolicyViolation"
    assert cond["message"].startswith(
        "spec.tiers[0].modelCache: volume type hostPath is not allowed for the model cache"
    ), cond["message"]
    assert "policy rule model-cache-volume" in cond["message"]
    assert invalid["status"]["observedGeneration"] == invalid["metadata"]["generation"]

    def warning() -> dict[str, Any] | None:
        return next(
            (
                e
                for e in events_for(kube, namespace, "chat")
                if (e["type"], e["reason"]) == ("Warning", "PolicyViolation")
            ),
            None,
        )

    event = wait_for(warning, TIMEOUT, "a Warning Event PolicyViolation")
    assert "model-cache-volume" in event["message"]
    settle(kube, namespace, operator, ["chat"])
    after = children(kube, namespace, "chat")
    for kind, objs in before.items():
        assert set(after[kind]) == set(objs), kind
        for name, obj in objs.items():
            now = after[kind][name]
            if kind == "Deployment":
                assert now["metadata"]["generation"] == obj["metadata"]["generation"], name
                assert now["spec"] == obj["spec"], name
                volumes = now["spec"]["template"]["spec"]["volumes"]
                assert not any("hostPath" in v for v in volumes), name
            else:
                assert now["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]

    # A new ZetaRouter that breaks the policy gets no child at all.
    bad = sample("rooted")
    bad["spec"]["tiers"][0]["runAsUser"] = 0
    create_zr(kube, namespace, bad)
    refused = wait_condition(kube, namespace, "rooted", "SpecValid", "False")
    assert "policy rule run-as-root" in conditions(refused)["SpecValid"]["message"]
    settle(kube, namespace, operator, ["rooted"])
    assert all(not objs for objs in children(kube, namespace, "rooted").values())


def test_secret_refs_need_the_secrets_mark(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """env secretKeyRef only to a Secret annotated zeta.ai/usable-by with the ZetaRouter's
    name: the operator reads the Secret's metadata with the Role of the default install."""
    kube.create(
        api_path("v1", "secrets", namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hf-token"},
            "stringData": {"token": "not-for-everyone"},
        },
    )
    body = sample("tok")
    body["spec"]["tiers"][0]["env"] = [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
    ]
    create_zr(kube, namespace, body)
    refused = wait_condition(kube, namespace, "tok", "SpecValid", "False")
    message = conditions(refused)["SpecValid"]["message"]
    assert message.startswith(
        "spec.tiers[0].env[0].valueFrom.secretKeyRef: Secret hf-token is not "
        "marked for this ZetaRouter"
    ), message
    assert all(not objs for objs in children(kube, namespace, "tok").values())
    # The Secret's owner marks it: the next reconciliation (the drift check) accepts it.
    kube.patch(
        api_path("v1", "secrets", namespace, "hf-token"),
        {"metadata": {"annotations": {"zeta.ai/usable-by": "tok"}}},
        MERGE_PATCH,
    )
    wait_condition(kube, namespace, "tok", "SpecValid", "True")
    dep = wait_children(kube, namespace, body)["Deployment"][
        f"tok-{body['spec']['tiers'][0]['name']}"
    ]
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[-1]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"


def test_invalid_new_router_gets_no_children(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = sample("broken")
    contexts = body["spec"]["router"]["contexts"]
    body["spec"]["router"]["contexts"] = [contexts[0], copy.deepcopy(contexts[0])]
    create_zr(kube, namespace, body)
    invalid = wait_condition(kube, namespace, "broken", "SpecValid", "False")
    assert "duplicate" in conditions(invalid)["SpecValid"]["message"].lower()
    settle(kube, namespace, operator, ["broken"])
    assert all(not objs for objs in children(kube, namespace, "broken").values())


def test_deleting_the_router_deletes_its_children(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    zr = create_zr(kube, namespace, sample())
    wait_children(kube, namespace, zr)
    kube.delete(zr_path(namespace, "chat"))

    def gone() -> bool:
        return all(not objs for objs in children(kube, namespace, "chat").values())

    wait_for(gone, 60, "the garbage collector to delete the children")
    assert kube.get_or_none(zr_path(namespace, "chat")) is None


def test_operator_restart_loses_and_duplicates_nothing(
    kube: Kube, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    first = create_zr(kube, namespace, sample("one"))
    wait_children(kube, namespace, first)

    # Changes while the operator is down are picked up when it comes back.
    operator.stop()
    later = [create_zr(kube, namespace, sample(n)) for n in ("two", "three")]
    kube.delete(api_path("v1", "services", namespace, "one"))
    operator.start()
    for body in [first, *later]:
        wait_children(kube, namespace, body)

    # A crash in the middle of reconciling a batch: nothing duplicated or lost after restart.
    batch = [create_zr(kube, namespace, sample(f"batch-{i}")) for i in range(4)]
    # Killed once it has started on the batch (a first child exists), not before.
    wait_for(
        lambda: any(children(kube, namespace, b["metadata"]["name"])["Deployment"] for b in batch),
        TIMEOUT,
        "the operator to start on the batch",
    )
    operator.kill()
    operator.start()
    routers = [first, *later, *batch]
    for body in routers:
        wait_children(kube, namespace, body)
    settle(kube, namespace, operator, [b["metadata"]["name"] for b in routers])

    expected: dict[str, set[str]] = {"Deployment": set(), "Service": set(), "ConfigMap": set()}
    for body in routers:
        for kind, names in expected_names(body).items():
            expected[kind] |= names
    for kind, (api_version, plural) in {
        "Deployment": ("apps/v1", "deployments"),
        "Service": ("v1", "services"),
        "ConfigMap": ("v1", "configmaps"),
    }.items():
        items = kube.list(
            api_path(api_version, plural, namespace), "app.kubernetes.io/managed-by=zeta-router"
        )["items"]
        names = [o["metadata"]["name"] for o in items]
        assert sorted(names) == sorted(expected[kind]), kind
    uids = {b["metadata"]["name"]: b["metadata"]["uid"] for b in routers}
    for body in routers:
        name = body["metadata"]["name"]
        for objs in children(kube, namespace, name).values():
            for obj in objs.values():
                assert obj["metadata"]["ownerReferences"][0]["uid"] == uids[name]
        assert condition_is(get_zr(kube, namespace, name), "SpecValid", "True")


def test_replicas_with_peering_run_one_at_a_time(
    kube: Kube, namespace: str, zr_crd: object, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    for crd in load_yaml_docs(REPO / "manifests" / "peering.yaml"):
        apply(kube, crd)
    peering = api_path("kopf.dev/v1", "kopfpeerings", namespace, "zeta-router")

    def peering_served() -> bool:
        return kube.get_or_none(api_path("kopf.dev/v1", "kopfpeerings", namespace)) is not None

    wait_for(peering_served, TIMEOUT, "the peering CRDs")
    replicas = [
        OperatorProcess(
            kubeconfig=operator_kubeconfig,
            namespaces=[namespace],
            log_path=tmp_path / f"operator-{priority}.log",
            drift_interval=DRIFT_INTERVAL,
            extra_args=[f"--priority={priority}"],
            standalone=False,
        )
        for priority in (10, 20)
    ]
    try:
        for proc in replicas:
            proc.start()
        # The operator made its peering object; both replicas report there.
        peers = wait_for(
            lambda: len(kube.get(peering).get("status") or {}) == 2 and kube.get(peering),
            TIMEOUT,
            "both replicas in the KopfPeering",
        )
        assert sorted(p["priority"] for p in peers["status"].values()) == [10, 20]
        wait_for(
            lambda: "Pausing operations in favour of" in replicas[0].log_tail(200),
            TIMEOUT,
            "the lower-priority replica to pause",
        )
        zr = create_zr(kube, namespace, sample())
        wait_children(kube, namespace, zr)

        # The whole logs: access-log lines of the liveness probes can push it out of any tail.
        def log(i: int) -> str:
            return replicas[i].log_path.read_text(errors="replace")

        # The children exist before the active replica logs that it reconciled: wait for the line.
        wait_for(lambda: "reconciled (create)" in log(1), TIMEOUT, "the active replica's log")
        assert "reconciled (create)" not in log(0)
    finally:
        for proc in replicas:
            proc.stop()
