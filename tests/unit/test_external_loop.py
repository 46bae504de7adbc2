"""The control loop with external tiers: where they may sit in the ladder, what the loop owns
(the tiers the operator runs, the cut points between them), and the spend cap (the pure
decision, the queries, the status, the routing file's paused mark and what the router does)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from support.routing_files import with_key_files
from zeta_router.api.models import SpecError, parse_status, parse_zetarouter
from zeta_router.autoscale.config import settings_from_spec
from zeta_router.autoscale.loop import _REASONS, external_status
from zeta_router.autoscale.metrics import assemble, build_queries, target_from
from zeta_router.autoscale.policy import (
    RESUME_SHARE,
    PolicyConfig,
    PolicyState,
    TierPolicy,
    decide,
)
from zeta_router.autoscale.policy.spend import decide_spend
from zeta_router.autoscale.snapshot import MetricsSnapshot, MetricsStatus, TierSample
from zeta_router.render.children import render
from zeta_router.render.configmap import paused_tiers
from zeta_router.router.config import compile_config
from zeta_router.router.errors import ApiError
from zeta_router.router.sleep import awake_order, unpaused_order
from zeta_router.router.upstream import attempt_order

PROM = {"url": "http://prometheus:9090"}


def spec(
    *,
    autoscaling: bool = True,
    feedback: bool = False,
    cap: float | None = 2.0,
    order: tuple[str, ...] = ("small", "large", "hosted"),
    **external: Any,
) -> dict[str, Any]:
    ext: dict[str, Any] = {
        "baseUrl": "https://llm.example.com/v1",
        "model": "big-model",
        "apiKeySecretRef": {"name": "provider-key"},
        "promptCostPer1kTokens": 0.5,
        "completionCostPer1kTokens": 1.5,
        **external,
    }
    if cap is not None:
        ext["maxCostPerHour"] = cap
    tiers = {
        "small": {"name": "small", "model": "m-7b", "resources": {"limits": {"nvidia.com/gpu": 1}}},
        "large": {
            "name": "large",
            "model": "m-14b",
            "replicas": {"min": 1, "max": 3},
            "resources": {"limits": {"nvidia.com/gpu": 2}},
        },
        "hosted": {"name": "hosted", "external": ext},
    }
    doc: dict[str, Any] = {
        "tiers": [tiers[n] for n in order],
        "router": {"contexts": [{"name": "default", "thresholds": [0.4, 0.8]}]},
    }
    if autoscaling:
        doc["autoscaling"] = {"enabled": True, "prometheus": PROM, "maxGpus": 6}
    if feedback:
        doc["feedback"] = {"enabled": True, "targetLargeShare": 0.3}
        doc.setdefault("autoscaling", {})["prometheus"] = PROM
    return doc


def errors(doc: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as err:
        parse_zetarouter(doc)
    return str(err.value)


# ---- where an external tier may sit ------------------------------------------------------------


def test_the_loop_runs_with_external_tiers_above_the_served_ones() -> None:
    s = parse_zetarouter(spec(feedback=True))
    assert s.autoscaling.enabled
    assert s.feedback.enabled
    assert [t.name for t in s.served_tiers] == ["small", "large"]


def test_an_external_tier_below_a_served_one_is_refused_with_the_loop() -> None:
    doc = spec(order=("small", "hosted", "large"))
    assert errors(doc).startswith(
        "spec.tiers[1].external: with autoscaling or feedback enabled, external tiers come "
        "after every tier the operator runs"
    )
    # Without the loop, any place in the ladder is fine (as before).
    assert parse_zetarouter(spec(order=("small", "hosted", "large"), autoscaling=False, cap=None))
    doc = spec(order=("small", "hosted", "large"), autoscaling=False, cap=None, feedback=True)
    assert "spec.tiers[1].external: with autoscaling or feedback enabled" in errors(doc)


def test_feedback_needs_two_served_tiers() -> None:
    doc = spec(feedback=True, autoscaling=False, cap=None)
    doc["tiers"] = [doc["tiers"][0], doc["tiers"][2]]
    doc["router"]["contexts"][0]["thresholds"] = [0.5]
    assert "spec.feedback.enabled: needs at least two tiers the operator runs" in errors(doc)


def test_the_spend_cap_needs_the_loop_and_prometheus() -> None:
    doc = spec(autoscaling=False)
    assert errors(doc) == (
        "spec.tiers[2].external.maxCostPerHour: needs autoscaling.prometheus.url (the spend is "
        "estimated from the routers' zeta_router_cost_total) and autoscaling.enabled"
    )
    doc = spec(autoscaling=False)
    doc["autoscaling"] = {"prometheus": PROM}
    assert errors(doc) == (
        "spec.tiers[2].external.maxCostPerHour: needs autoscaling.enabled (the control loop "
        "watches the spend)"
    )
    doc = spec(cap=0)
    assert "spec.tiers[2].external.maxCostPerHour" in errors(doc)


# ---- what the loop owns ------------------------------------------------------------------------


def test_the_loop_scales_and_budgets_only_the_served_tiers() -> None:
    st = settings_from_spec("ns", "chat", parse_zetarouter(spec()))
    assert [t.name for t in st.policy.tiers] == ["small", "large"]
    assert [t.name for t in st.target.tiers] == ["small", "large"]
    assert st.target.external == ("hosted",)
    assert st.spend_caps == {"hosted": 2.0}
    assert st.policy.spend_caps == {"hosted": 2.0}
    ctx = st.policy.contexts[0]
    # Only the cut point between small and large moves, and stays under the one into hosted.
    assert ctx.thresholds == (0.4,)
    assert ctx.upper == pytest.approx(0.799)
    assert st.loop_cuts([0.45, 0.8]) == (0.45,)
    assert st.full_cuts("default", (0.45,)) == [0.45, 0.8]
    assert st.spec_thresholds["default"] == (0.4, 0.8)


def test_one_served_tier_leaves_the_loop_no_cut_point() -> None:
    doc = spec()
    doc["tiers"] = [doc["tiers"][0], doc["tiers"][2]]
    doc["router"]["contexts"][0]["thresholds"] = [0.7]
    st = settings_from_spec("ns", "chat", parse_zetarouter(doc))
    assert st.policy.contexts[0].thresholds == ()
    assert st.full_cuts("default", ()) == [0.7]


def test_load_shift_stays_below_the_cut_point_into_the_external_tier() -> None:
    st = settings_from_spec("ns", "chat", parse_zetarouter(spec(cap=None)))
    policy = st.policy
    state = PolicyState.initial(policy, {"small": 1, "large": 3}, {"default": (0.79,)})
    # large saturated and cut by the GPU budget, small idle: the loop shifts load to small, up
    # to 0.799 at most.
    snap = MetricsSnapshot(
        status=MetricsStatus.OK,
        tiers={
            "small": TierSample("small", 1, 0, 0, None, 0.1, 0.0),
            "large": TierSample("large", 3, 60, 30, None, 5.0, 3.0),
        },
    )
    now = 1000.0
    for _ in range(3):
        d = decide(policy, snap, state, now)
        state = d.state
        now += 30
    # maxGpus 6: small 1 + large 2 x 2; hosted holds none (and is in no replica count).
    assert d.replicas == {"small": 1, "large": 2}
    assert 0.79 < d.thresholds["default"][0] <= 0.799
    assert st.full_cuts("default", d.thresholds["default"])[1] == 0.8


# ---- the spend cap (pure) ----------------------------------------------------------------------


def capped(cap: float = 10.0, window: float = 120.0) -> PolicyConfig:
    return PolicyConfig(
        tiers=(TierPolicy("small", 1, 2),),
        contexts=(),
        spend_caps={"hosted": cap},
        metrics_window_seconds=window,
    )


def test_spend_over_the_cap_pauses_and_resumes_with_hysteresis() -> None:
    cfg = capped()
    notes: list[str] = []
    out = decide_spend(cfg, {"hosted": 10.0}, {}, 0.0, notes)
    assert out.paused == {}
    assert not out.changes
    out = decide_spend(cfg, {"hosted": 12.5}, {}, 100.0, notes)
    assert out.paused == {"hosted": 100.0}
    (change,) = out.changes
    assert (change.kind, change.direction, change.old, change.new) == (
        "spend",
        "down",
        (12.5,),
        (10.0,),
    )
    assert change.reason == "tier hosted: paused: spend 12.5/h > maxCostPerHour 10"
    # Under the cap but not under 90% of it: stays paused.
    out = decide_spend(cfg, {"hosted": 9.5}, {"hosted": 100.0}, 400.0, notes := [])
    assert out.paused == {"hosted": 100.0}
    assert not out.changes
    assert "not yet under 9" in notes[0]
    # Under 90%, but paused for less than a window: the estimate still covers open time.
    out = decide_spend(cfg, {"hosted": 1.0}, {"hosted": 100.0}, 200.0, notes := [])
    assert out.paused == {"hosted": 100.0}
    assert not out.changes
    assert "before resuming" in notes[0]
    out = decide_spend(cfg, {"hosted": 10.0 * RESUME_SHARE - 0.01}, {"hosted": 100.0}, 220.0, [])
    assert out.paused == {}
    assert out.changes[0].direction == "up"
    assert out.changes[0].reason.startswith("tier hosted: resumed: spend 8.99/h < 9")


def test_no_data_changes_nothing() -> None:
    cfg = capped()
    assert decide_spend(cfg, None, {}, 0.0, []).paused == {}
    assert decide_spend(cfg, {}, {}, 0.0, []).paused == {}
    notes: list[str] = []
    assert decide_spend(cfg, None, {"hosted": 5.0}, 1e6, notes).paused == {"hosted": 5.0}
    assert notes == ["tier hosted: no spend estimate; staying paused"]
    # Through decide: an unavailable snapshot never pauses, and keeps a pause.
    down = MetricsSnapshot.unavailable(MetricsStatus.UNREACHABLE, "x")
    state = PolicyState.initial(cfg)
    assert decide(cfg, down, state, 0.0).paused == frozenset()
    paused = PolicyState(tiers=state.tiers, contexts={}, paused={"hosted": 0.0})
    assert decide(cfg, down, paused, 1e6).paused == frozenset({"hosted"})


def test_a_removed_cap_resumes_at_once() -> None:
    cfg = PolicyConfig(tiers=(TierPolicy("small", 1, 2),), contexts=())
    out = decide_spend(cfg, {}, {"hosted": 0.0}, 1.0, [])
    assert out.paused == {}
    assert out.changes[0].reason == "tier hosted: resumed: no spend cap"


def test_decide_pauses_and_the_state_keeps_it() -> None:
    cfg = capped()
    snap = MetricsSnapshot(
        status=MetricsStatus.OK,
        tiers={"small": TierSample("small", 1, 0, 0, None, 0.1, 0.5)},
        spend_per_hour={"hosted": 30.0},
    )
    d = decide(cfg, snap, PolicyState.initial(cfg), 50.0)
    assert d.paused == frozenset({"hosted"})
    assert d.spend_per_hour == {"hosted": 30.0}
    assert d.summary == "tier hosted: paused: spend 30/h > maxCostPerHour 10"
    again = PolicyState.from_dict(d.state.to_dict())
    assert again.paused == {"hosted": 50.0}
    assert again.with_current(cfg, {"small": 1}).paused == {"hosted": 50.0}
    assert _REASONS["spend", "down"] == "ExternalTierPaused"
    assert _REASONS["spend", "up"] == "ExternalTierResumed"


# ---- metrics -----------------------------------------------------------------------------------


def test_the_spend_query_and_its_reading() -> None:
    target = target_from("ns", "chat", [("small", "vllm"), ("large", "vllm")], ["default"])
    target = type(target)(target.namespace, target.name, target.tiers, target.contexts, ("hosted",))
    q = build_queries(target, 120)
    assert q["spend_per_hour"] == (
        'sum by (tier) (rate(zeta_router_cost_total{namespace="ns",'
        'app_kubernetes_io_instance="chat"}[120s])) * 3600'
    )
    # Quality kept below the largest served tier leaves the external tier's answers out.
    assert 'tier!~"large|hosted"' in q["feedback_sum"]
    assert "spend_per_hour" not in build_queries(
        target_from("ns", "chat", [("small", "vllm")], []), 120
    )
    base = {"targets": [{"metric": {"zeta_ai_tier": "small"}, "value": [0, "1"]}]}
    routers = {"routers": [{"metric": {}, "value": [0, "2"]}]}
    spend = {"spend_per_hour": [{"metric": {"tier": "hosted"}, "value": [0, "4.5"]}]}
    assert assemble(target, {**base, **routers, **spend}).spend_per_hour == {"hosted": 4.5}
    # Routers report but no cost was counted: it spent nothing. No routers: no data.
    assert assemble(target, {**base, **routers}).spend_per_hour == {"hosted": 0.0}
    assert assemble(target, base).spend_per_hour == {}


# ---- status, routing file, router --------------------------------------------------------------


def body_with(status: dict[str, Any], doc: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "chat", "namespace": "ns"},
        "spec": copy.deepcopy(doc or spec()),
        "status": status,
    }


def test_status_lists_each_external_tier_spend_and_pause() -> None:
    st = settings_from_spec("ns", "chat", parse_zetarouter(spec()))
    cfg = st.policy
    snap = MetricsSnapshot(
        status=MetricsStatus.OK,
        tiers={},
        spend_per_hour={"hosted": 3.25},
    )
    d = decide(cfg, snap, PolicyState.initial(cfg), 0.0)
    out = external_status(st, d, 0.0, body_with({}))
    assert out == [
        {
            "name": "hosted",
            "paused": True,
            "costPerHour": 3.25,
            "maxCostPerHour": 2.0,
            "since": "1970-01-01T00:00:00Z",
            "reason": "tier hosted: paused: spend 3.25/h > maxCostPerHour 2",
        }
    ]
    # Next interval, no change: since and reason stay.
    d2 = decide(cfg, snap, d.state, 30.0)
    assert external_status(st, d2, 30.0, body_with({"external": out})) == out
    status = parse_status({"status": {"external": out}})
    assert status.external is not None
    assert status.external[0].paused


def test_a_paused_tier_is_marked_in_the_routing_file_only_while_the_loop_applies() -> None:
    doc = spec()
    status = parse_status({"status": {"external": [{"name": "hosted", "paused": True}]}})
    s = parse_zetarouter(doc)
    assert paused_tiers(s, status) == {"hosted"}
    out = render("chat", "ns", s, status, paused=paused_tiers(s, status))
    hosted = out.routing.tiers[2]
    assert hosted.external is not None
    assert hosted.external.paused is True
    assert out.routing.tiers[0].external is None
    advisory = copy.deepcopy(doc)
    advisory["autoscaling"]["mode"] = "advisory"
    assert paused_tiers(parse_zetarouter(advisory), status) == set()
    nocap = spec(cap=None)
    assert paused_tiers(parse_zetarouter(nocap), status) == set()
    unmarked = render("chat", "ns", s).routing.tiers[2]
    assert unmarked.external is not None
    assert unmarked.external.paused is None


def runtime(keys: Path, paused: bool, overflow: bool = False) -> Any:
    s = parse_zetarouter(spec(overflowOnly=overflow))
    status = parse_status({"status": {"external": [{"name": "hosted", "paused": paused}]}})
    routing = render("chat", "ns", s, status, paused=paused_tiers(s, status)).routing
    return compile_config(with_key_files(routing, keys))


def test_the_router_sends_a_paused_tier_nothing(tmp_path: Path) -> None:
    rt = runtime(tmp_path, paused=True)
    assert rt.tier_by_name["hosted"].paused
    assert not runtime(tmp_path, paused=False).tier_by_name["hosted"].paused
    # Scored for hosted: answered by the nearest tier below (failover order without it).
    assert unpaused_order(attempt_order(2, 3, True), rt) == [1, 0]
    # Without failover, the nearest tier that can answer.
    assert unpaused_order(attempt_order(2, 3, False), rt) == [1]
    # Scored for small: hosted is out of its failover order too.
    assert unpaused_order(attempt_order(0, 3, True), rt) == [0, 1]
    assert awake_order([2], rt) == [2]  # (hosted is not asleep: sleeping is another mark)
    with pytest.raises(ApiError) as err:
        unpaused_order([2], rt, fallback=False)  # pinned with X-Zeta-Tier
    assert err.value.status == 503
    assert err.value.code == "tier_paused"
    assert "maxCostPerHour" in str(err.value)
    assert err.value.headers["Retry-After"] == "60"


# ---- refused demand (the overflow the loop must still see) -----------------------------------


def test_a_tier_refusing_requests_scales_up_for_them() -> None:
    cfg = PolicyConfig(tiers=(TierPolicy("small", 1, 8),), contexts=())
    state = PolicyState.initial(cfg, {"small": 2})
    # A short queue (below target) but 3/s refused next to 3/s answered: double the tier.
    sample = TierSample("small", 2, 2, 30, None, 0.5, 3.0, refused_rate=3.0)
    assert sample.demand_in_flight == pytest.approx(64.0)
    snap = MetricsSnapshot(status=MetricsStatus.OK, tiers={"small": sample})
    d = decide(cfg, snap, state, 0.0)
    assert d.replicas == {"small": 4}
    assert "3/s refused (429 or busy)" in d.summary
    # Without refusals the same load holds (no pressure), and nothing refused is unknown.
    quiet = MetricsSnapshot(
        status=MetricsStatus.OK,
        tiers={"small": TierSample("small", 2, 2, 30, None, 0.5, 3.0, refused_rate=0.0)},
    )
    assert decide(cfg, quiet, state, 0.0).replicas == {"small": 2}
    assert TierSample("small", 2, 2, 30, None, 0.5, 3.0).demand_in_flight == 32


def test_the_refused_query_and_its_reading() -> None:
    target = target_from("ns", "chat", [("small", "vllm")], [])
    q = build_queries(target, 60)
    assert q["refused"] == (
        'sum by (tier) (rate(zeta_router_tier_failures_total{namespace="ns",'
        'app_kubernetes_io_instance="chat",reason=~"http_429|busy"}[60s]))'
    )
    base = {"targets": [{"metric": {"zeta_ai_tier": "small"}, "value": [0, "1"]}]}
    routers = {"routers": [{"metric": {}, "value": [0, "2"]}]}
    refused = {"refused": [{"metric": {"tier": "small"}, "value": [0, "0.5"]}]}
    assert assemble(target, {**base, **routers, **refused}).tiers["small"].refused_rate == 0.5
    assert assemble(target, {**base, **routers}).tiers["small"].refused_rate == 0.0
    assert assemble(target, base).tiers["small"].refused_rate is None


# ---- the simulator's external tier -------------------------------------------------------------


def _sim(cap: float | None) -> Any:
    from zeta_router.sim.controllers import PolicyController
    from zeta_router.sim.engine import simulate
    from zeta_router.sim.scenario import Scenario, SimContext, SimExternal, SimTier
    from zeta_router.sim.trace import Trace

    scenario = Scenario(
        tiers=[
            SimTier(name="small", min_replicas=1, max_replicas=1, concurrency=1, startup_seconds=5)
        ],
        contexts=[SimContext(name="c", thresholds=[])],
        interval_seconds=10,
        metrics_window_seconds=60,
        external=SimExternal(
            ttft_seconds=0.5,
            prompt_cost_per_1k_tokens=1.0,
            completion_cost_per_1k_tokens=2.0,
            max_cost_per_hour=cap,
            refuse_queue_per_replica=1,
        ),
    )
    # 100 requests at once: one runs, one queues, the rest overflow (each costs 0.1 + 0.2).
    n = 100
    trace = Trace(
        arrival=[1.0 + i * 0.01 for i in range(n)] + [60.0 + i * 0.01 for i in range(n)],
        context=["c"] * 2 * n,
        prompt_tokens=[100] * 2 * n,
        output_tokens=[100] * 2 * n,
        score=[0.5] * 2 * n,
        name="flood",
    )
    return simulate(scenario, trace, PolicyController())


def test_the_simulated_provider_takes_the_overflow_and_its_cap_pauses_it() -> None:
    free = _sim(None)
    assert free.external_requests == 196
    assert free.external_spend == pytest.approx(196 * 0.3)
    assert free.share_by_tier["hosted"] == pytest.approx(0.98)
    assert free.external_paused_hours == 0
    # Capped at 1/h: the first flood pauses it (58.8 in a minute is far over), so the second
    # one queues on the cluster's tier instead.
    capped = _sim(1.0)
    assert capped.external_requests == 98
    assert capped.external_paused_hours > 0


def test_the_report_shows_the_provider_share_and_spend() -> None:
    from zeta_router.sim.report import format_table

    r = _sim(None)
    assert r.summary()["externalTier"] == "hosted"
    header, _, line = format_table([r]).splitlines()
    assert header.split()[-2:] == ["external", "spend"]
    assert line.split()[-2:] == ["98.0%", "58.80"]
    assert line.split()[7] == "2.0%"  # the largest served tier's share, not the provider's
