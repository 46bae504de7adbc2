"""Learned corrections on their way to the routers: the API, the model store, the routing
configuration (and its size bound), rollback to the prior, and the router's compiled config."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import yaml

from zeta_router.api.learning import DEFAULT_JUDGE_PROMPT
from zeta_router.api.models import SpecError, parse_zetarouter
from zeta_router.api.routing import CONFIGMAP_KEY, RoutingConfig
from zeta_router.render.children import render
from zeta_router.render.learned import (
    MODEL_STORE_KEY,
    build_model_store,
    effective_corrections,
    parse_model_store,
)
from zeta_router.router.config import ConfigError, compile_config
from zeta_router.scoring import ngrams
from zeta_router.scoring.features import FEATURE_NAMES, vector
from zeta_router.scoring.learned import (
    CompiledCorrection,
    LearnedCorrection,
    LearnedScorer,
    bytes_per_context,
)
from zeta_router.scoring.learner import prune
from zeta_router.scoring.scorer import Scorer

CONFIGMAP_LIMIT = 1024 * 1024


def spec_body(learning: dict[str, Any] | None = None, contexts: int = 0) -> dict[str, Any]:
    tier = {"engine": "llamacpp", "model": "m.gguf"}
    router: dict[str, Any] = {}
    if contexts:
        router["contexts"] = [
            {"name": f"ctx{i:02d}", "scorer": {"bias": -1.0, "weights": dict.fromkeys(
                FEATURE_NAMES, 0.123456)}}
            for i in range(contexts)
        ]  # fmt: skip
    return {
        "apiVersion": "zeta.ai/v1alpha1",
        "kind": "ZetaRouter",
        "metadata": {"name": "zr", "namespace": "ns", "uid": "u1"},
        "spec": {
            "tiers": [{**tier, "name": "small"}, {**tier, "name": "large"}],
            "router": {**router, "shadowSampleRate": 0.1},
            "learning": learning or {},
        },
    }


def correction(word: str = "contract", weight: float = 3.0) -> LearnedCorrection:
    return CompiledCorrection(
        bits=ngrams.DEFAULT_BITS,
        bias=0.1,
        coef=np.zeros(len(FEATURE_NAMES)),
        keys=ngrams.indices(word),
        values=np.array([weight]),
        labels=321,
        source="test",
    ).to_model()


@functools.cache
def big_correction(budget: int) -> LearnedCorrection:
    """A correction as large as the budget allows (the learner prunes to it)."""
    rng = np.random.default_rng(budget)
    keys = np.sort(rng.choice(1 << 18, size=120_000, replace=False)).astype(np.int64)
    full = CompiledCorrection(
        bits=18,
        bias=0.0,
        coef=rng.normal(0, 0.1, len(FEATURE_NAMES)),
        keys=keys,
        values=rng.normal(0, 0.2, keys.size),
    )
    return prune(full, budget).to_model(source="x" * 1000)


def routing(body: dict[str, Any], learned: dict[str, LearnedCorrection]) -> RoutingConfig:
    spec = parse_zetarouter(body)
    out = render("zr", "ns", spec, learned=learned)
    text = out.children[0]["data"][CONFIGMAP_KEY]
    return RoutingConfig.model_validate(yaml.safe_load(text))


def test_learning_spec_checks() -> None:
    ok = parse_zetarouter(spec_body({"enabled": True}))
    assert ok.learning.mode == "advisory"  # advisory first, by default
    assert ok.learning.model == "learned"
    with pytest.raises(SpecError) as e:
        parse_zetarouter(
            spec_body(
                {
                    "enabled": True,
                    "contexts": ["nope"],
                    "interval": "1s",
                    "minLabels": 500,
                    "maxLabels": 200,
                    "sources": {"coldStart": {"configMap": "x", "context": "other"}},
                }
            )
        )
    text = str(e.value)
    for part in (
        "spec.learning.contexts[0]: 'nope' is not a context",
        "spec.learning.interval: 1s is shorter than 5s",
        "spec.learning.maxLabels: 200 is below minLabels 500",
        "spec.learning.sources.coldStart.context: 'other' is not a context",
    ):
        assert part in text
    body = spec_body({"enabled": True, "sources": {"shadow": {"judge": "largest-tier"}}})
    body["spec"]["router"]["shadowSampleRate"] = 0.0
    with pytest.raises(SpecError, match=r"shadowSampleRate > 0"):
        parse_zetarouter(body)
    with pytest.raises(SpecError, match=r"judgePrompt: missing the placeholders"):
        parse_zetarouter(
            spec_body({"sources": {"shadow": {"judgePrompt": "Is {candidate} fine?"}}})
        )


def test_model_store_round_trip_and_broken_entries() -> None:
    models = {"default": correction(), "ZetaHRM": correction("tort", -2.0)}
    cm = build_model_store("zr", models)
    assert cm["metadata"]["name"] == "zr-learned"
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "zeta-router-learning"
    assert parse_model_store(cm) == models
    raw = yaml.safe_load(cm["data"][MODEL_STORE_KEY])
    raw["ZetaHRM"]["ngrams"] = "garbage"
    raw["ZetaTRM"] = "not a model"
    cm["data"][MODEL_STORE_KEY] = yaml.safe_dump(raw)
    assert parse_model_store(cm) == {"default": models["default"]}
    assert parse_model_store({"data": {MODEL_STORE_KEY: "{{"}}) == {}
    assert parse_model_store(None) == {}


def test_corrections_reach_the_routing_config_only_while_learning_uses_them() -> None:
    learned = {"default": correction(), "ZetaTRM": correction("tort")}
    on = routing(spec_body({"enabled": True, "mode": "apply"}), learned)
    by_name = {c.name: c for c in on.contexts}
    assert by_name["default"].learned == learned["default"]
    assert by_name["ZetaTRM"].learned == learned["ZetaTRM"]
    assert by_name["ZetaHRM"].learned is None
    assert on.learning is not None
    assert on.learning.contexts == ["ZetaHRM", "ZetaTRM", "default"]
    assert on.learning.feedback_labels is True
    assert on.learning.shadow_judge is None
    # Rollback is one field: the routers get the prior alone, the store keeps the models.
    back = routing(spec_body({"enabled": True, "mode": "apply", "model": "prior"}), learned)
    assert all(c.learned is None for c in back.contexts)
    assert back.learning is not None  # labels are still collected
    # Learning off: nothing learned, nothing sampled.
    off = routing(spec_body({"enabled": False}), learned)
    assert all(c.learned is None for c in off.contexts)
    assert off.learning is None
    # Only the contexts that learn.
    some = routing(spec_body({"enabled": True, "contexts": ["ZetaTRM"]}), learned)
    assert {c.name for c in some.contexts if c.learned} == {"ZetaTRM"}
    assert some.learning is not None
    assert some.learning.contexts == ["ZetaTRM"]


def test_judge_settings_reach_the_routers() -> None:
    cfg = routing(
        spec_body({"enabled": True, "sources": {"shadow": {"judge": "largest-tier"}}}), {}
    )
    assert cfg.learning is not None
    assert cfg.learning.shadow_judge == "largest-tier"
    assert cfg.learning.judge_prompt == DEFAULT_JUDGE_PROMPT
    custom = "Q: {request}\nA: {reference}\nB: {candidate}\nIs B as good as A? YES or NO."
    cfg = routing(
        spec_body(
            {
                "enabled": True,
                "sources": {"feedback": False, "shadow": {"judge": "largest-tier",
                                                          "judgePrompt": custom}},
            }
        ),
        {},
    )  # fmt: skip
    assert cfg.learning is not None
    assert cfg.learning.judge_prompt == custom
    assert cfg.learning.feedback_labels is False


@pytest.mark.parametrize("contexts", [1, 32])
def test_routing_configmap_stays_under_the_limit_with_every_context_learned(
    contexts: int,
) -> None:
    body = spec_body({"enabled": True, "mode": "apply"}, contexts=contexts)
    budget = bytes_per_context(contexts)
    learned = {f"ctx{i:02d}": big_correction(budget) for i in range(contexts)}
    spec = parse_zetarouter(body)
    out = render("zr", "ns", spec, learned=learned)
    text = out.children[0]["data"][CONFIGMAP_KEY]
    assert len(text.encode()) < CONFIGMAP_LIMIT - 64 * 1024
    assert sum(c.learned is not None for c in out.routing.contexts) == contexts
    # Corrections pruned for fewer contexts than there are now are held back past the
    # budget instead of pushing the ConfigMap over.
    oversized = {f"ctx{i:02d}": big_correction(160 * 1024) for i in range(contexts)}
    kept = effective_corrections(spec, oversized)
    out = render("zr", "ns", spec, learned=oversized)
    assert len(out.children[0]["data"][CONFIGMAP_KEY].encode()) < CONFIGMAP_LIMIT
    assert 1 <= len(kept) <= contexts


def test_router_compiles_learned_contexts_and_their_scores_move() -> None:
    cfg = routing(spec_body({"enabled": True, "mode": "apply"}), {"default": correction()})
    runtime = compile_config(cfg)
    learned = runtime.contexts["default"].scorer
    prior = runtime.contexts["ZetaHRM"].scorer
    assert isinstance(learned, LearnedScorer)
    assert isinstance(prior, Scorer)
    about = {"messages": [{"role": "user", "content": "Is this contract binding?"}]}
    other = {"messages": [{"role": "user", "content": "Is this poem binding?"}]}
    assert learned.score_body(about) > prior.score_body(about) + 0.1
    # Without the learned word only the correction's bias moves the logit.
    x = vector({**other})
    assert learned.decision_body(other) == pytest.approx(prior.decision_vector(x) + 0.1)
    # A broken correction is a config error naming the context (routers keep the last good).
    data = cfg.model_dump(by_alias=True, mode="json")
    data["contexts"][2]["learned"]["ngramCount"] = 7
    with pytest.raises(ConfigError, match=r"context 'default': .*ngrams"):
        compile_config(RoutingConfig.model_validate(data))
