"""The ZetaRouter models: defaults, every validation error (with its field path), parsing."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from zeta_router.api import defaults
from zeta_router.api.models import (
    SpecError,
    ZetaRouterSpec,
    duration_seconds,
    parse_status,
    parse_zetarouter,
)
from zeta_router.api.routing import ScorerWeights

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "manifests" / "samples").glob("zetarouter-*.yaml"))


def base() -> dict[str, Any]:
    """A valid two-tier spec that the error cases below break one way each."""
    return {
        "tiers": [
            {"name": "small", "model": "m-7b", "replicas": {"min": 1, "max": 2}},
            {"name": "large", "model": "m-14b", "replicas": {"min": 1, "max": 2}},
        ],
        "router": {
            "contexts": [
                {"name": "ZetaHRM", "thresholds": [0.4]},
                {"name": "default", "thresholds": [0.5]},
            ],
            "defaultContext": "default",
        },
    }


def errors_of(spec_or_body: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_zetarouter(spec_or_body)
    return str(info.value)


# ---- defaults ---------------------------------------------------------------------------------


def test_minimal_spec_gets_every_default() -> None:
    spec = parse_zetarouter(
        {"tiers": [{"name": "small", "model": "a"}, {"name": "large", "model": "b"}]}
    )
    small = spec.tiers[0]
    assert (small.replicas.min, small.replicas.max, small.replicas.initial) == (1, 1, 1)
    assert small.engine == "vllm"
    assert small.port == defaults.VLLM_PORT
    assert small.effective_image == defaults.VLLM_IMAGE
    assert small.effective_resources.to_dict() == {
        "limits": {"nvidia.com/gpu": 1},
        "requests": {"cpu": "4", "memory": "16Gi"},
    }
    assert small.tensor_parallel_size == 1
    assert small.rollout_strategy == "Surge"
    assert small.topology_spread_constraints is None
    assert small.gpus_per_replica == 1
    assert small.served_name == "a"
    assert small.cost_weight == 1.0
    assert small.run_as_user == 1000
    assert spec.router.port == defaults.ROUTER_PORT
    assert spec.spec_thresholds() == {"ZetaHRM": [0.4], "ZetaTRM": [0.6], "default": [0.5]}
    assert spec.default_context == "default"
    assert spec.router.failover is True
    assert spec.router.shadow_sample_rate == 0.0
    assert spec.autoscaling.enabled is False
    assert spec.autoscaling.mode == "apply"
    assert spec.autoscaling.interval_seconds == 30.0
    assert spec.autoscaling.scale_down_delay_seconds == 300.0
    assert spec.autoscaling.prometheus.timeout_seconds == 10.0
    assert spec.feedback.enabled is False
    assert spec.feedback.threshold_step == 0.02
    assert spec.feedback.bounds_for("default") == (0.0, 1.0)
    assert not spec.loop_enabled
    assert not spec.loop_owns_replicas
    assert not spec.loop_owns_thresholds


def test_llamacpp_defaults() -> None:
    spec = parse_zetarouter({"tiers": [{"name": "cpu", "model": "x.gguf", "engine": "llamacpp"}]})
    tier = spec.tiers[0]
    assert tier.effective_image == defaults.LLAMACPP_IMAGE
    assert tier.effective_resources.to_dict() == {"requests": {"cpu": "1", "memory": "2Gi"}}
    assert tier.gpus_per_replica == 0


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        ({}, (1, 1, 1)),
        ({"min": 2}, (2, 2, 2)),
        ({"max": 4}, (1, 4, 1)),
        ({"min": 0, "max": 3}, (0, 3, 1)),
        ({"min": 0, "max": 3, "initial": 0}, (0, 3, 0)),
        ({"min": 1, "max": 5, "initial": 3}, (1, 5, 3)),
        ({"min": 0}, (0, 1, 1)),
    ],
)
def test_replica_defaults(replicas: dict[str, int], expected: tuple[int, int, int]) -> None:
    # (a second tier: one tier must keep a replica, for the routers)
    tiers = [{"name": "s", "model": "s"}, {"name": "t", "model": "m", "replicas": replicas}]
    r = parse_zetarouter({"tiers": tiers}).tiers[1].replicas
    assert (r.min, r.max, r.initial) == expected
    assert (r.maximum, r.start) == expected[1:]


def test_default_contexts_spread_over_three_tiers_and_are_empty_for_one() -> None:
    three = parse_zetarouter({"tiers": [{"name": n, "model": n} for n in ("s", "m", "l")]})
    assert three.spec_thresholds()["default"] == [0.377541, 0.622459]
    hrm = three.spec_thresholds()["ZetaHRM"]
    assert len(hrm) == 2
    assert 0 < hrm[0] < hrm[1] < 1
    one = parse_zetarouter({"tiers": [{"name": "only", "model": "m"}]})
    assert one.spec_thresholds() == {"ZetaHRM": [], "ZetaTRM": [], "default": []}


def test_context_without_thresholds_gets_its_reference_and_first_context_is_default() -> None:
    spec = base()
    spec["router"] = {"contexts": [{"name": "support"}, {"name": "ZetaTRM"}]}
    parsed = parse_zetarouter(spec)
    assert parsed.spec_thresholds() == {"support": [0.5], "ZetaTRM": [0.6]}
    assert parsed.default_context == "support"


@pytest.mark.parametrize("tiers", [1, 2, 3, 5])
def test_a_zetarouter_without_contexts_routes_like_the_standalone_router(tiers: int) -> None:
    from zeta_router.router.config import standalone_config

    names = [f"t{i}" for i in range(tiers)]
    spec = parse_zetarouter({"tiers": [{"name": n, "model": n} for n in names]})
    standalone = standalone_config(
        [(n, f"http://127.0.0.1:{8001 + i}") for i, n in enumerate(names)]
    )
    assert spec.spec_thresholds() == {c.name: list(c.thresholds) for c in standalone.contexts}
    assert spec.default_context == standalone.default_context


def test_ownership_follows_autoscaling_and_feedback_modes() -> None:
    spec = base()
    spec["autoscaling"] = {"enabled": True, "prometheus": {"url": "http://prom:9090"}}
    parsed = parse_zetarouter(spec)
    assert parsed.loop_owns_replicas
    assert parsed.loop_owns_thresholds
    spec["autoscaling"]["mode"] = "advisory"
    parsed = parse_zetarouter(spec)
    assert parsed.loop_enabled
    assert not parsed.loop_owns_replicas
    assert not parsed.loop_owns_thresholds
    spec["autoscaling"] = {"prometheus": {"url": "http://prom:9090"}}
    spec["feedback"] = {"enabled": True, "targetLargeShare": 0.3}
    parsed = parse_zetarouter(spec)
    assert not parsed.loop_owns_replicas
    assert parsed.loop_owns_thresholds


def test_parsed_spec_round_trips_and_body_or_bare_spec_give_the_same() -> None:
    spec = base()
    from_spec = parse_zetarouter(spec)
    from_body = parse_zetarouter(
        {"apiVersion": "zeta.ai/v1alpha1", "kind": "ZetaRouter", "metadata": {"name": "chat"},
         "spec": spec}
    )  # fmt: skip
    assert from_spec == from_body
    assert ZetaRouterSpec.model_validate(from_spec.to_dict()) == from_spec
    assert parse_zetarouter(from_spec.to_dict()) == from_spec


def test_parsing_does_not_modify_its_input() -> None:
    spec = base()
    del spec["router"]
    before = copy.deepcopy(spec)
    parse_zetarouter(spec)
    assert spec == before


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_parse(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (body,) = [d for d in docs if d.get("kind") == "ZetaRouter"]
    spec = parse_zetarouter(body)
    assert len(spec.served_tiers) == 2
    assert all(len(t) == len(spec.tiers) - 1 for t in spec.spec_thresholds().values())


def test_samples_cover_both_engines() -> None:
    engines = set()
    for path in SAMPLES:
        body = yaml.safe_load(path.read_text())
        engines |= {t.engine for t in parse_zetarouter(body).served_tiers}
    assert engines == {"vllm", "llamacpp"}
    assert {p.name for p in SAMPLES} == {
        "zetarouter-7b-14b.yaml",
        "zetarouter-cpu.yaml",
        "zetarouter-external-overflow.yaml",
        "zetarouter-sleeping-large.yaml",
    }


def test_sleeping_sample_lets_only_its_large_tier_sleep() -> None:
    body = yaml.safe_load((REPO / "manifests/samples/zetarouter-sleeping-large.yaml").read_text())
    spec = parse_zetarouter(body)
    assert [t.replicas.may_sleep for t in spec.tiers] == [False, True]
    assert spec.tiers[1].replicas.sleep_after_seconds == 900.0
    assert spec.loop_owns_replicas
    assert {c.name: c.when_asleep for c in spec.contexts} == {
        "ZetaHRM": "wait",
        "ZetaTRM": "fallback",
        "default": "fallback",
    }


# ---- validation errors ------------------------------------------------------------------------


def _set(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``spec`` with the dotted ``path`` (list indexes as numbers) set to ``value``."""
    out = copy.deepcopy(spec)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return out


PROM = {"prometheus": {"url": "http://prom:9090"}}

CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "min > max",
        _set(base(), "tiers.1.replicas", {"min": 3, "max": 2}),
        "spec.tiers[1].replicas: min 3 > max 2",
    ),
    (
        "initial above max",
        _set(base(), "tiers.0.replicas", {"min": 1, "max": 2, "initial": 5}),
        "spec.tiers[0].replicas.initial: 5 is outside [min, max] = [1, 2]",
    ),
    (
        "initial below min",
        _set(base(), "tiers.0.replicas", {"min": 2, "max": 3, "initial": 1}),
        "spec.tiers[0].replicas.initial: 1 is outside [min, max] = [2, 3]",
    ),
    (
        "duplicate tier names",
        _set(base(), "tiers.1.name", "small"),
        "spec.tiers[1].name: duplicate name 'small' (also spec.tiers[0].name)",
    ),
    (
        "thresholds not increasing",
        _set(base(), "tiers", [*base()["tiers"], {"name": "xl", "model": "m"}])
        | {"router": {"contexts": [{"name": "default", "thresholds": [0.6, 0.4]}]}},
        "spec.router.contexts[0].thresholds: [0.6, 0.4] are not strictly increasing",
    ),
    (
        "equal thresholds",
        _set(base(), "tiers", [*base()["tiers"], {"name": "xl", "model": "m"}])
        | {"router": {"contexts": [{"name": "default", "thresholds": [0.5, 0.5]}]}},
        "spec.router.contexts[0].thresholds: [0.5, 0.5] are not strictly increasing",
    ),
    (
        "threshold above 1",
        _set(base(), "router.contexts.0.thresholds", [1.5]),
        "spec.router.contexts[0].thresholds[0]: Input should be less than or equal to 1 (got 1.5)",
    ),
    (
        "threshold below 0",
        _set(base(), "router.contexts.1.thresholds", [-0.1]),
        "spec.router.contexts[1].thresholds[0]: Input should be greater than or equal to 0",
    ),
    (
        "threshold count",
        _set(base(), "router.contexts.1.thresholds", [0.3, 0.6]),
        "spec.router.contexts[1].thresholds: 2 cut points given, but 2 tiers need exactly 1",
    ),
    (
        "threshold count, three tiers",
        _set(base(), "tiers", [*base()["tiers"], {"name": "xl", "model": "m"}]),
        "spec.router.contexts[0].thresholds: 1 cut point given, but 3 tiers need exactly 2",
    ),
    (
        "duplicate contexts",
        _set(base(), "router.contexts.1.name", "ZetaHRM"),
        "spec.router.contexts[1].name: duplicate name 'ZetaHRM' "
        "(also spec.router.contexts[0].name)",
    ),
    (
        "defaultContext not defined",
        _set(base(), "router.defaultContext", "chat"),
        "spec.router.defaultContext: 'chat' is not a context (contexts: ZetaHRM, default)",
    ),
    (
        "defaultContext of the built-in contexts",
        _set(base(), "router", {"defaultContext": "chat"}),
        "spec.router.defaultContext: 'chat' is not a context (contexts: ZetaHRM, ZetaTRM, default)",
    ),
    (
        "shadowSampleRate above 1",
        _set(base(), "router.shadowSampleRate", 1.2),
        "spec.router.shadowSampleRate: Input should be less than or equal to 1 (got 1.2)",
    ),
    (
        "shadowSampleRate below 0",
        _set(base(), "router.shadowSampleRate", -0.5),
        "spec.router.shadowSampleRate: Input should be greater than or equal to 0",
    ),
    (
        "bounds name an unknown context",
        _set(base(), "feedback", {"bounds": [{"context": "chat", "min": 0.1, "max": 0.9}]}),
        "spec.feedback.bounds[0].context: 'chat' is not a context (contexts: ZetaHRM, default)",
    ),
    (
        "bounds do not contain the thresholds",
        _set(base(), "feedback", {"bounds": [{"context": "default", "min": 0.6, "max": 0.9}]}),
        "spec.feedback.bounds[0]: [0.6, 0.9] does not contain the thresholds [0.5] of context "
        "'default'",
    ),
    (
        "bounds min > max",
        _set(base(), "feedback", {"bounds": [{"context": "default", "min": 0.7, "max": 0.2}]}),
        "spec.feedback.bounds[0]: min 0.7 > max 0.2",
    ),
    (
        "bounds listed twice",
        _set(base(), "feedback", {"bounds": [{"context": "default"}, {"context": "default"}]}),
        "spec.feedback.bounds[1].context: duplicate name 'default' (also "
        "spec.feedback.bounds[0].context)",
    ),
    (
        "feedback without a goal",
        _set(base(), "feedback", {"enabled": True}) | {"autoscaling": PROM},
        "spec.feedback: enabled without targetLargeShare or qualityFloor",
    ),
    (
        "feedback with one tier",
        {
            "tiers": [{"name": "only", "model": "m"}],
            "feedback": {"enabled": True, "qualityFloor": 0.8},
            "autoscaling": PROM,
        },
        "spec.feedback.enabled: needs at least two tiers",
    ),
    (
        "autoscaling without Prometheus",
        _set(base(), "autoscaling", {"enabled": True}),
        "spec.autoscaling.prometheus.url: required when autoscaling or feedback is enabled",
    ),
    (
        "feedback without Prometheus",
        _set(base(), "feedback", {"enabled": True, "targetLargeShare": 0.2}),
        "spec.autoscaling.prometheus.url: required when autoscaling or feedback is enabled",
    ),
    (
        "Prometheus URL without a scheme",
        _set(base(), "autoscaling", {"prometheus": {"url": "prom:9090"}}),
        "spec.autoscaling.prometheus.url: String should match pattern '^https?://' "
        "(got 'prom:9090')",
    ),
    (
        "GPU budget below the minimum replicas",
        _set(base(), "autoscaling", {"maxGpus": 1}),
        "spec.autoscaling.maxGpus: 1 is below the 2 GPUs the tiers' minimum replicas need",
    ),
    (
        "interval too short",
        _set(base(), "autoscaling", {"interval": "500ms"}),
        "spec.autoscaling.interval: 500ms is shorter than 1s",
    ),
    (
        "interval not a duration",
        _set(base(), "autoscaling", {"interval": "30 seconds"}),
        "spec.autoscaling.interval: must be a duration such as '30s', '5m', '1h30m' or '500ms'",
    ),
    (
        "mode not an option",
        _set(base(), "autoscaling", {"mode": "auto"}),
        "spec.autoscaling.mode: Input should be 'apply' or 'advisory' (got 'auto')",
    ),
    (
        "model port is the router port",
        _set(base(), "tiers.1.port", 8080),
        "spec.tiers[1].port: 8080 is also the router's port (router.port)",
    ),
    (
        "model port is the router's admin port",
        _set(base(), "tiers.0.port", 8081),
        "spec.tiers[0].port: 8081 is also the router's admin port (router.adminPort)",
    ),
    (
        "admin port is the client port",
        _set(base(), "router.adminPort", 8080),
        "spec.router.adminPort: 8080 is also router.port; they must differ",
    ),
    (
        "force-tier token hash not a digest",
        _set(base(), "router.forceTierTokenSha256", ["abc"]),
        "spec.router.forceTierTokenSha256[0]: must be a SHA-256 digest",
    ),
    (
        "port out of range",
        _set(base(), "tiers.0.port", 70000),
        "spec.tiers[0].port: Input should be less than or equal to 65535 (got 70000)",
    ),
    (
        "args set what the operator sets",
        _set(base(), "tiers.0.args", ["--max-model-len", "8192", "--port=9000"]),
        "spec.tiers[0].args[2]: --port is set by the operator from the tier's port",
    ),
    (
        "llama.cpp model flag in args",
        _set(
            base(),
            "tiers.0",
            {"name": "small", "model": "x.gguf", "engine": "llamacpp", "args": ["-m", "y.gguf"]},
        ),
        "spec.tiers[0].args[0]: -m is set by the operator from the tier's model",
    ),
    (
        "unknown engine",
        _set(base(), "tiers.0.engine", "tensorflow"),
        "spec.tiers[0].engine: Input should be 'vllm' or 'llamacpp' (got 'tensorflow')",
    ),
    (
        "tier name not a DNS label",
        _set(base(), "tiers.0.name", "Small_Tier"),
        "spec.tiers[0].name: must be a DNS label",
    ),
    (
        "missing model",
        _set(base(), "tiers.0", {"name": "small"}),
        "spec.tiers[0].model: required (unless the tier is external)",
    ),
    (
        "unknown field",
        _set(base(), "tiers.0.modle", "x"),
        "spec.tiers[0].modle: unknown field",
    ),
    (
        "wrong type",
        _set(base(), "tiers.1.replicas", {"min": 1, "max": "many"}),
        "spec.tiers[1].replicas.max: Input should be a valid integer",
    ),
    (
        "not a quantity",
        _set(base(), "tiers.0.resources", {"limits": {"memory": "lots"}}),
        "spec.tiers[0].resources.limits.memory: 'lots' is not a Kubernetes quantity",
    ),
    (
        "a float quantity",
        _set(base(), "tiers.0.resources", {"requests": {"cpu": 0.5}}),
        "spec.tiers[0].resources.requests.cpu: must be an integer or a quantity string",
    ),
    (
        "no tiers",
        _set(base(), "tiers", []),
        "spec.tiers: List should have at least 1 item after validation, not 0",
    ),
    (
        "costWeight not positive",
        _set(base(), "tiers.0.costWeight", 0),
        "spec.tiers[0].costWeight: Input should be greater than 0",
    ),
    (
        "scorer weight of an unknown feature",
        _set(base(), "router.contexts.0.scorer", {"bias": 0.1, "weights": {"vibes": 2.0}}),
        "spec.router.contexts[0].scorer.weights: unknown feature(s) vibes (known: ",
    ),
    (
        "context name with a slash",
        _set(base(), "router.contexts.0.name", "a/b"),
        "spec.router.contexts[0].name: must be letters, digits",
    ),
    (
        "tensor parallel size larger than the GPUs",
        _set(base(), "tiers.0.args", ["--tensor-parallel-size", "2"]),
        "spec.tiers[0].args: vLLM's parallel sizes (tp 2) use 2 GPU(s) per replica, but "
        "resources give each replica 1 (nvidia.com/gpu): make them agree",
    ),
    (
        "parallel sizes whose product is not the GPUs",
        _set(
            _set(base(), "tiers.0.args", ["-tp", "2", "-pp", "2"]),
            "tiers.0.resources",
            {"limits": {"nvidia.com/gpu": 2}},
        ),
        "use 4 GPU(s) per replica, but resources give each replica 2",
    ),
    (
        "pipeline parallel size that does not divide the GPUs",
        _set(
            _set(base(), "tiers.0.args", ["--pipeline-parallel-size=3"]),
            "tiers.0.resources",
            {"limits": {"nvidia.com/gpu": 4}},
        ),
        "spec.tiers[0].args: vLLM's parallel sizes (pp 3) use 3 GPU(s) per replica",
    ),
    (
        "parallel size that is not a number",
        _set(base(), "tiers.0.args", ["--tensor-parallel-size", "auto"]),
        "spec.tiers[0].args: --tensor-parallel-size needs a positive integer (got 'auto')",
    ),
    (
        "unknown rollout strategy",
        _set(base(), "tiers.0.rolloutStrategy", "Recreate"),
        "spec.tiers[0].rolloutStrategy: Input should be 'Surge' or 'Replace'",
    ),
    (
        "drain delay that is not a duration",
        _set(base(), "router.drainDelay", "5"),
        "spec.router.drainDelay: must be a duration",
    ),
    (
        "unknown balancing strategy",
        _set(base(), "router.balancing", {"strategy": "fastest"}),
        "spec.router.balancing.strategy: Input should be 'prefix', 'least-loaded', "
        "'round-robin' or 'random'",
    ),
    (
        "load factor below 1",
        _set(base(), "router.balancing", {"loadFactor": 0.5}),
        "spec.router.balancing.loadFactor: Input should be greater than or equal to 1",
    ),
    (
        "quiet period longer than the drain timeout that bounds it",
        _set(_set(base(), "router.drainQuietPeriod", "2m"), "router.drainTimeout", "30s"),
        "spec.router.drainQuietPeriod: 120s is longer than drainTimeout (30s)",
    ),
]


@pytest.mark.parametrize(("spec", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_spec_names_the_field(spec: dict[str, Any], message: str) -> None:
    assert message in errors_of(spec)


def test_every_semantic_problem_is_reported_at_once() -> None:
    spec = _set(base(), "router.defaultContext", "chat")
    spec = _set(spec, "router.contexts.1.thresholds", [0.2, 0.3])
    spec = _set(spec, "tiers.1.name", "small")
    with pytest.raises(SpecError) as info:
        parse_zetarouter(spec)
    paths = [p for p, _ in info.value.problems]
    assert paths == [
        "spec.tiers[1].name",
        "spec.router.contexts[1].thresholds",
        "spec.router.defaultContext",
    ]
    assert str(info.value).count("; ") == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"metadata": {"name": "Chat"}, "spec": base()},
            "metadata.name: 'Chat' must be a DNS-1035",
        ),
        ({"metadata": {"name": "7chat"}, "spec": base()}, "metadata.name: '7chat' must be a DNS"),
        (
            {"metadata": {"name": "c" * 60}, "spec": base()},
            "spec.tiers[0].name: Service name",
        ),
        ({"metadata": {"name": "chat"}}, "spec: missing or not an object"),
        ({"metadata": {"name": "chat"}, "spec": []}, "spec: missing or not an object"),
    ],
)
def test_invalid_object(body: dict[str, Any], message: str) -> None:
    assert message in errors_of(body)


def test_body_without_a_name_checks_the_spec_only() -> None:
    assert parse_zetarouter({"spec": base()}) == parse_zetarouter(base())


def test_direct_construction_validates_too() -> None:
    bad = _set(base(), "router.defaultContext", "nope")
    with pytest.raises(ValueError, match="defaultContext: 'nope' is not a context"):
        ZetaRouterSpec.model_validate(bad)


# ---- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("500ms", 0.5), ("1.5s", 1.5)],
)
def test_duration_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "5 m", "1d", "-1s"])
def test_duration_seconds_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="must be a duration"):
        duration_seconds(text)


def test_gpus_per_replica_reads_limits_then_requests() -> None:
    spec = parse_zetarouter(
        {"tiers": [
            {"name": "a", "model": "m", "resources": {"limits": {"nvidia.com/gpu": "2"}}},
            {"name": "b", "model": "m", "resources": {"requests": {"nvidia.com/gpu": 4}}},
            {"name": "c", "model": "m", "resources": {"requests": {"cpu": "500m"}}},
        ], "router": {"contexts": [{"name": "default"}]}}
    )  # fmt: skip
    assert [t.gpus_per_replica for t in spec.tiers] == [2, 4, 0]


def test_scorer_weights_of_known_features_are_accepted() -> None:
    from zeta_router.scoring.features import FEATURE_NAMES

    spec = _set(base(), "router.scorer", {"bias": -1.0, "weights": {FEATURE_NAMES[0]: 0.5}})
    parsed = parse_zetarouter(spec)
    assert parsed.router.scorer == ScorerWeights(bias=-1.0, weights={FEATURE_NAMES[0]: 0.5})


def test_parse_status_is_lenient() -> None:
    status = parse_status(
        {
            "status": {
                "observedGeneration": 3,
                "conditions": [{"type": "Ready", "status": "True"}, {"reason": "no type"}],
                "tiers": [{"name": "small", "replicas": 2, "desiredReplicas": 3}, {"bad": 1}],
                "thresholds": "not a mapping",
                "readySummary": "1/2",
                "somethingNewer": {"x": 1},
            }
        }
    )
    assert status.observed_generation == 3
    assert [c.type for c in status.conditions] == ["Ready"]
    assert [(t.name, t.desired_replicas) for t in status.tiers] == [("small", 3)]
    assert status.thresholds is None
    assert status.ready_summary == "1/2"
    assert parse_status({}).conditions == []
    assert parse_status({"status": "garbage"}).tiers == []


def test_parse_status_reads_what_it_writes() -> None:
    raw = {
        "thresholds": {"default": [0.45]},
        "routingGeneration": 4,
        "lastDecision": {"time": "2024-01-01T00:00:00Z", "action": "none", "reason": "steady"},
        "loopState": {"anything": [1, 2]},
    }
    status = parse_status({"status": raw})
    assert status.to_dict() == {"conditions": [], "tiers": [], **raw}


# ---- robustness -------------------------------------------------------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.floats(-2, 2) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
PATHS = [
    "tiers", "tiers.0", "tiers.0.name", "tiers.0.replicas", "tiers.0.replicas.min",
    "tiers.0.resources", "tiers.1.port", "router", "router.contexts", "router.contexts.0",
    "router.contexts.0.thresholds", "router.defaultContext", "autoscaling", "autoscaling.maxGpus",
    "feedback", "feedback.bounds", "metadata",
]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(PATHS), value=JSONISH)
def test_any_malformed_input_raises_only_spec_error(path: str, value: Any) -> None:
    if path == "metadata":
        body: dict[str, Any] = {"metadata": value, "spec": base()}
    else:
        body = {"metadata": {"name": "chat"}, "spec": _set(base(), path, value)}
    try:
        parse_zetarouter(body)
    except SpecError as e:
        problems = e.problems
    else:
        return
    assert problems
    assert all(p.startswith(("spec", "metadata")) for p, _ in problems)


def test_every_tier_asleep_is_refused_since_routers_live_in_tier_pods() -> None:
    spec = {
        "tiers": [
            {"name": "small", "model": "s", "replicas": {"min": 0, "max": 2}},
            {"name": "large", "model": "l", "replicas": {"min": 0, "max": 2}},
        ]
    }
    with pytest.raises(SpecError) as e:
        parse_zetarouter(spec)
    assert e.value.problems == [
        (
            "spec.tiers",
            "every tier has replicas.min 0, but the routers run in the tiers' pods: at least one "
            "tier must keep min >= 1 so that the entry Service always has a router (let the "
            "larger tiers sleep, not the one that carries the routers)",
        )
    ]
    spec["tiers"][0]["replicas"] = {"min": 1}
    parsed = parse_zetarouter(spec)
    assert parsed.tiers[1].replicas.may_sleep
    assert parsed.tiers[1].replicas.sleep_after_seconds == 600.0


def test_sleep_after_only_with_min_zero() -> None:
    spec = base()
    spec["tiers"][1]["replicas"] = {"min": 1, "sleepAfter": "5m"}
    with pytest.raises(SpecError) as e:
        parse_zetarouter(spec)
    assert e.value.problems == [
        ("spec.tiers[1].replicas.sleepAfter", "a tier sleeps only with min 0 (min is 1)")
    ]
    spec["tiers"][1]["replicas"] = {"min": 0, "sleepAfter": "90s"}
    assert parse_zetarouter(spec).tiers[1].replicas.sleep_after_seconds == 90.0


def test_context_when_asleep_defaults_to_fallback() -> None:
    spec = base()
    spec["router"] = {"contexts": [{"name": "a"}, {"name": "b", "whenAsleep": "wait"}]}
    a, b = parse_zetarouter(spec).contexts
    assert (a.when_asleep, b.when_asleep, b.wait_seconds) == ("fallback", "wait", 60.0)
    spec["router"] = {"contexts": [{"name": "a", "whenAsleep": "hold"}]}
    with pytest.raises(SpecError, match=r"spec.router.contexts\[0\].whenAsleep"):
        parse_zetarouter(spec)
