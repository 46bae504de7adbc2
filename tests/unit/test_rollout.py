"""One tier's pod template at a time: the rollout plan, the template a held tier keeps, and what
the controller renders around them (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from zeta_router.api.models import parse_zetarouter
from zeta_router.controller import rollout
from zeta_router.controller.desired import RenderSettings, compute
from zeta_router.render import names
from zeta_router.render.deployment import build_deployment

TIERS = ["small", "medium", "large"]


def spec(image: str = "zeta-router:1") -> dict[str, Any]:
    return {
        "tiers": [{"name": t, "model": f"org/{t}", "engine": "llamacpp"} for t in TIERS],
        "router": {"image": image},
    }


def rendered(image: str = "zeta-router:1") -> dict[str, dict[str, Any]]:
    parsed = parse_zetarouter(spec(image))
    return {t.name: build_deployment("chat", parsed, t, 2) for t in parsed.tiers}


def live(desired: dict[str, Any], settled: bool = True, **status: int) -> dict[str, Any]:
    """``desired`` as the apiserver would hold it once applied (with a status)."""
    obj = copy.deepcopy(desired)
    obj["metadata"]["generation"] = 4
    n = obj["spec"]["replicas"]
    obj["status"] = {
        "observedGeneration": 4,
        "replicas": n,
        "updatedReplicas": n,
        "readyReplicas": n,
        "availableReplicas": n if settled else n - 1,
        **status,
    }
    return obj


def test_nothing_to_do_when_every_tier_runs_its_template() -> None:
    want = rendered()
    plan = rollout.plan(TIERS, want, {t: live(d) for t, d in want.items()})
    assert {t: p.action for t, p in plan.items()} == dict.fromkeys(TIERS, "current")


def test_new_tiers_are_created_at_once() -> None:
    plan = rollout.plan(TIERS, rendered(), {})
    assert {p.action for p in plan.values()} == {"create"}


def test_an_operator_upgrade_rolls_the_smallest_tier_first_and_holds_the_others() -> None:
    old, new = rendered("zeta-router:1"), rendered("zeta-router:2")
    plan = rollout.plan(TIERS, new, {t: live(d) for t, d in old.items()})
    assert plan["small"].action == "update"
    assert plan["small"].change == "router image zeta-router:1 -> zeta-router:2"
    assert (plan["medium"].action, plan["medium"].waiting_for) == ("hold", "small")
    assert (plan["large"].action, plan["large"].waiting_for) == ("hold", "small")


def test_the_next_tier_waits_until_the_previous_one_is_settled() -> None:
    old, new = rendered("zeta-router:1"), rendered("zeta-router:2")
    # small got its new template; its rollout is not finished (one replica not available).
    state = {
        "small": live(new["small"], settled=False),
        "medium": live(old["medium"]),
        "large": live(old["large"]),
    }
    plan = rollout.plan(TIERS, new, state)
    assert plan["small"].action == "current"
    assert (plan["medium"].action, plan["medium"].waiting_for) == ("hold", "small")
    # Old pods still running also keep it unsettled.
    state["small"] = live(new["small"], updatedReplicas=1, replicas=3)
    assert rollout.plan(TIERS, new, state)["medium"].action == "hold"
    # Settled: medium goes, large waits for medium.
    state["small"] = live(new["small"])
    plan = rollout.plan(TIERS, new, state)
    assert plan["medium"].action == "update"
    assert (plan["large"].action, plan["large"].waiting_for) == ("hold", "medium")


def test_a_tier_in_motion_may_take_a_newer_template_and_others_wait_for_it() -> None:
    v1, v2, v3 = rendered("zeta-router:1"), rendered("zeta-router:2"), rendered("zeta-router:3")
    state = {"small": live(v2["small"], settled=False), "medium": live(v1["medium"])}
    state["large"] = live(v1["large"])
    plan = rollout.plan(TIERS, v3, state)
    assert plan["small"].action == "update"  # no other tier is in motion
    assert plan["medium"].action == "hold"


def test_an_unsettled_tier_without_a_template_change_blocks_the_others() -> None:
    old, new = rendered("zeta-router:1"), rendered("zeta-router:2")
    new["small"] = old["small"]  # (only the larger tiers change)
    state = {t: live(d) for t, d in old.items()}
    state["small"] = live(old["small"], settled=False)  # scaling up, say
    plan = rollout.plan(TIERS, new, state)
    assert plan["medium"].action == "hold"
    assert plan["medium"].waiting_for == "small"


def test_change_summary_names_the_part_that_changed() -> None:
    base = parse_zetarouter(spec())
    tier = base.tiers[0]
    before = build_deployment("chat", base, tier, 1)
    args = parse_zetarouter({**spec(), "tiers": [{**spec()["tiers"][0], "args": ["-t", "2"]}]})
    after = build_deployment("chat", args, args.tiers[0], 1)
    assert rollout.change_summary(before, after) == "model-server container changed"
    node = parse_zetarouter(
        {**spec(), "tiers": [{**spec()["tiers"][0], "priorityClassName": "high"}]}
    )
    after = build_deployment("chat", node, node.tiers[0], 1)
    assert rollout.change_summary(before, after) == "pod settings changed"
    legacy = copy.deepcopy(before)
    del legacy["metadata"]["annotations"]
    assert rollout.change_summary(legacy, after) == "rendered by a new operator release"


def test_template_digest_moves_with_the_template_only() -> None:
    a = rendered()["small"]
    b = build_deployment(
        "chat", parse_zetarouter(spec()), parse_zetarouter(spec()).tiers[0], replicas=5
    )
    assert (
        a["metadata"]["annotations"][names.TEMPLATE_HASH]
        == b["metadata"]["annotations"][names.TEMPLATE_HASH]
    )
    c = rendered("zeta-router:2")["small"]
    assert (
        a["metadata"]["annotations"][names.TEMPLATE_HASH]
        != c["metadata"]["annotations"][names.TEMPLATE_HASH]
    )


# ---- the template a held tier keeps -------------------------------------------------------------


def test_applied_template_is_the_live_one_reduced_to_our_fields() -> None:
    want = rendered()["small"]
    obj = live(want)
    # As the apiserver holds it: defaults filled in, a field set by someone else.
    template = obj["spec"]["template"]
    template["spec"]["dnsPolicy"] = "ClusterFirst"
    template["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "now"}
    model = template["spec"]["containers"][0]
    model["imagePullPolicy"] = "IfNotPresent"
    labels = {f"f:{k}": {} for k in template["metadata"]["labels"]}
    model_fields = {".": {}, "f:name": {}, "f:image": {}, "f:args": {}}
    ours = {
        "f:metadata": {"f:labels": labels},
        "f:spec": {
            "f:containers": {
                'k:{"name":"model"}': model_fields,
                'k:{"name":"router"}': {".": {}, "f:name": {}, "f:image": {}},
            },
            "f:volumes": {'k:{"name":"routing"}': {".": {}, "f:name": {}, "f:configMap": {}}},
        },
    }
    obj["metadata"]["managedFields"] = [
        {
            "manager": names.FIELD_MANAGER,
            "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:template": ours}},
        },
        {"manager": "kubectl-rollout", "operation": "Update", "fieldsV1": {}},
    ]
    kept = rollout.applied_template(obj, names.FIELD_MANAGER)
    assert kept["metadata"] == {"labels": want["spec"]["template"]["metadata"]["labels"]}
    assert "dnsPolicy" not in kept["spec"]
    assert [c["name"] for c in kept["spec"]["containers"]] == ["model", "router"]
    assert kept["spec"]["containers"][0] == {
        "name": "model",
        "image": model["image"],
        "args": model["args"],
    }
    assert kept["spec"]["volumes"] == [{"name": "routing", "configMap": {"name": "chat-routing"}}]
    # A Deployment our manager never applied (an earlier release): kept whole.
    del obj["metadata"]["managedFields"]
    assert rollout.applied_template(obj, names.FIELD_MANAGER) == template


def test_a_held_tier_keeps_its_template_and_annotations_and_gets_the_rest() -> None:
    old, new = rendered("zeta-router:1")["medium"], rendered("zeta-router:2")["medium"]
    new["spec"]["replicas"] = 3
    out = rollout.held(new, live(old), names.FIELD_MANAGER)
    assert out["spec"]["template"] == old["spec"]["template"]
    assert out["metadata"]["annotations"] == old["metadata"]["annotations"]
    assert out["spec"]["replicas"] == 3  # scaling still applies


# ---- what the controller renders ----------------------------------------------------------------


def body(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "zeta.ai/v1alpha1",
        "kind": "ZetaRouter",
        "metadata": {"name": "chat", "namespace": "ns", "uid": "u", "generation": 2},
        "spec": spec(image),
    }


def test_compute_holds_the_templates_of_the_tiers_that_wait() -> None:
    old = rendered("zeta-router:1")
    live_deps = {f"chat-{t}": live(d) for t, d in old.items()}
    want = compute(body("zeta-router:2"), live_deps, {})
    deps = {c["metadata"]["name"]: c for c in want.children if c["kind"] == "Deployment"}
    assert deps["chat-small"]["spec"]["template"] != old["small"]["spec"]["template"]
    note = deps["chat-small"]["metadata"]["annotations"][names.TEMPLATE_CHANGE]
    assert note == "router image zeta-router:1 -> zeta-router:2"
    for tier in ("medium", "large"):
        assert deps[f"chat-{tier}"]["spec"]["template"] == old[tier]["spec"]["template"]
    assert {t: p.action for t, p in want.rollout.items()} == {
        "small": "update",
        "medium": "hold",
        "large": "hold",
    }


@pytest.mark.parametrize("enabled", [True, False])
def test_compute_adds_the_network_policy_when_enabled(enabled: bool) -> None:
    want = compute(body("zeta-router:1"), {}, {}, RenderSettings(network_policy=enabled))
    kinds = [c["kind"] for c in want.children]
    assert ("NetworkPolicy" in kinds) is enabled
