"""From a ZetaRouter spec to the control loop's settings, and the loop's pure parts."""

from __future__ import annotations

from typing import Any

import pytest

from zeta_router.api.models import parse_zetarouter
from zeta_router.autoscale.config import LoopSettings, settings_from_spec
from zeta_router.autoscale.loop import ControlLoop, Running
from zeta_router.autoscale.policy import ContextState

SPEC: dict[str, Any] = {
    "tiers": [
        {"name": "small", "model": "Qwen/Qwen2.5-7B-Instruct", "replicas": {"min": 1, "max": 4}},
        {
            "name": "large",
            "model": "Qwen/Qwen2.5-14B-Instruct",
            "replicas": {"min": 1, "max": 3},
            "resources": {"limits": {"nvidia.com/gpu": 2}},
        },
    ],
    "router": {
        "contexts": [
            {"name": "ZetaHRM", "thresholds": [0.4]},
            {"name": "ZetaTRM"},
        ]
    },
    "autoscaling": {
        "enabled": True,
        "mode": "advisory",
        "prometheus": {
            "url": "http://prometheus:9090",
            "authSecretRef": {"name": "prom"},
            "timeout": "3s",
        },
        "interval": "15s",
        "targets": {"queuePerReplica": 2, "ttftP90Seconds": 1.5},
        "scaleDownDelay": "2m",
        "maxGpus": 8,
    },
    "feedback": {
        "enabled": True,
        "targetLargeShare": 0.3,
        "qualityFloor": 0.8,
        "thresholdStep": 0.05,
        "minSamples": 20,
        "bounds": [{"context": "ZetaHRM", "min": 0.3, "max": 0.6}],
    },
}


def settings(spec: dict[str, Any]) -> LoopSettings:
    return settings_from_spec("team", "assistant", parse_zetarouter(spec))


def test_settings_from_a_full_spec() -> None:
    s = settings(SPEC)
    assert s.enabled
    assert s.scales_replicas
    assert s.mode == "advisory"
    assert not s.applies
    assert s.interval_seconds == 15
    assert s.window_seconds == 60  # at least a minute of rate data
    assert s.prometheus_url == "http://prometheus:9090"
    assert s.prometheus_timeout == 3
    assert s.auth_secret is not None
    assert (s.auth_secret.name, s.auth_secret.key) == ("prom", "token")
    p = s.policy
    assert [(t.name, t.min_replicas, t.max_replicas, t.gpus_per_replica) for t in p.tiers] == [
        ("small", 1, 4, 1.0),  # vLLM default: one GPU
        ("large", 1, 3, 2.0),
    ]
    assert (p.target_queue_per_replica, p.target_ttft_p90_seconds) == (2.0, 1.5)
    assert p.scale_down_delay_seconds == 120
    assert p.max_gpus == 8
    assert p.load_shift
    assert p.feedback.enabled
    assert (p.feedback.target_large_share, p.feedback.quality_floor) == (0.3, 0.8)
    assert p.threshold_step == 0.05
    assert p.feedback.min_samples == 20
    hrm, trm = p.contexts
    assert (hrm.thresholds, hrm.lower, hrm.upper) == ((0.4,), 0.3, 0.6)
    # No thresholds given: the built-in default of the context; no bounds: [0, 1].
    assert (trm.thresholds, trm.lower, trm.upper) == ((0.6,), 0.0, 1.0)
    assert s.target.namespace == "team"
    assert [t.engine for t in s.target.tiers] == ["vllm", "vllm"]
    assert s.target.contexts == ("ZetaHRM", "ZetaTRM")


def test_defaults_for_a_minimal_spec() -> None:
    s = settings(
        {
            "tiers": [
                {"name": "cpu", "model": "m", "engine": "llamacpp"},
                {"name": "big", "model": "n"},
            ]
        }
    )
    assert not s.enabled
    assert s.applies
    assert s.interval_seconds == 30
    assert s.policy.scale_down_delay_seconds == 300
    assert s.policy.tiers[0].gpus_per_replica == 0
    assert [c.name for c in s.policy.contexts] == ["ZetaHRM", "ZetaTRM", "default"]
    assert s.prometheus_url is None


def test_feedback_alone_moves_thresholds_but_not_replicas() -> None:
    spec = {**SPEC, "autoscaling": {**SPEC["autoscaling"], "enabled": False}}
    s = settings(spec)
    assert s.enabled
    assert not s.scales_replicas
    assert not s.policy.load_shift


def test_state_rebuilt_after_a_restart_counts_raised_thresholds_as_load_shift() -> None:
    s = settings({**SPEC, "feedback": {"enabled": False}})
    loop = ControlLoop(kube=None, events=None)  # type: ignore[arg-type]
    running = Running(
        replicas={"small": 2, "large": 3},
        thresholds={"ZetaHRM": (0.5,), "ZetaTRM": (0.6,)},
        generation=4,
    )
    state = loop.rebuilt_state(s, running)
    assert state.tiers["large"].desired == 3
    assert state.contexts["ZetaHRM"] == ContextState(base=(0.4,), shift=(pytest.approx(0.1),))
    assert state.contexts["ZetaTRM"] == ContextState(base=(0.6,), shift=(0.0,))
    # With feedback on, the running thresholds are the base: feedback put them there.
    fb = loop.rebuilt_state(settings(SPEC), running)
    assert fb.contexts["ZetaHRM"] == ContextState(base=(0.5,), shift=(0.0,))


def test_saved_state_is_read_back_from_the_status() -> None:
    s = settings(SPEC)
    loop = ControlLoop(kube=None, events=None)  # type: ignore[arg-type]
    running = Running(replicas={"small": 2, "large": 1}, thresholds={}, generation=1)
    state = loop.rebuilt_state(s, running).awaiting(5)
    body = {"status": {"loopState": state.to_dict()}}
    assert ControlLoop.remembered_state(body) == state
    assert ControlLoop.remembered_state({"status": {"loopState": {"tiers": 3}}}) is None
    assert ControlLoop.remembered_state({}) is None
