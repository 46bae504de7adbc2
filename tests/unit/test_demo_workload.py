"""The demo's workload and ZetaRouter: prompts that exercise both tiers and the contexts, a
reproducible mix, and a resource the operator accepts."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import yaml

from zeta_router.api.models import parse_zetarouter
from zeta_router.router.config import BUILTIN_THRESHOLDS
from zeta_router.scoring.scorer import default_scorer
from zeta_router_dev.demo.prompts import CONTEXTS, LEVELS, PROMPTS, mixed_workload
from zeta_router_dev.demo.resource import NAME, TIERS, zetarouter

REPO = Path(__file__).resolve().parents[2]


def tier_for(text: str, context: str) -> str:
    score = default_scorer().score_body(
        {"messages": [{"role": "user", "content": text}], "max_tokens": 24}
    )
    return "large" if score >= BUILTIN_THRESHOLDS[context] else "small"


def test_easy_prompts_go_small_and_hard_ones_large_in_every_context() -> None:
    for prompt in PROMPTS:
        for context in CONTEXTS:
            got = tier_for(prompt.text, context)
            if prompt.level == "easy":
                assert got == "small", (prompt.text, context)
            if prompt.level == "hard":
                assert got == "large", (prompt.text, context)


def test_medium_prompts_depend_on_the_context() -> None:
    medium = [p for p in PROMPTS if p.level == "medium"]
    assert medium
    for prompt in medium:
        assert tier_for(prompt.text, "ZetaHRM") == "large", prompt.text
        assert tier_for(prompt.text, "ZetaTRM") == "small", prompt.text


def test_the_mix_is_reproducible_and_covers_every_level_and_context() -> None:
    first = list(itertools.islice(mixed_workload(seed=7), 300))
    again = list(itertools.islice(mixed_workload(seed=7), 300))
    other = list(itertools.islice(mixed_workload(seed=8), 300))
    assert first == again
    assert first != other
    levels = Counter(r.level for r in first)
    contexts = Counter(r.context for r in first)
    assert set(levels) == set(LEVELS)
    assert set(contexts) == set(CONTEXTS)
    # Easy prompts are the most common (weight 0.45), hard the least (0.25).
    assert levels["easy"] > levels["hard"]
    texts = {p.text: p.level for p in PROMPTS}
    assert all(texts[r.text] == r.level for r in first)


def test_the_demo_zetarouter_is_valid_and_follows_the_cpu_sample() -> None:
    body = zetarouter("http://127.0.0.1:9090")
    spec = parse_zetarouter(body)
    sample = yaml.safe_load((REPO / "manifests" / "samples" / "zetarouter-cpu.yaml").read_text())
    sample_spec = parse_zetarouter(sample)
    assert body["metadata"]["name"] == NAME == sample["metadata"]["name"]
    assert [t.name for t in spec.tiers] == [t.name for t in sample_spec.tiers] == list(TIERS)
    assert all(t.engine == "llamacpp" for t in spec.tiers)
    assert [t.replicas.max for t in spec.tiers] == [t.replicas.max for t in sample_spec.tiers]
    assert {c.name: c.thresholds for c in spec.router.contexts} == {
        c.name: c.thresholds for c in sample_spec.router.contexts
    }
    assert spec.autoscaling.enabled
    assert spec.autoscaling.mode == "apply"
    assert spec.autoscaling.prometheus.url == "http://127.0.0.1:9090"
    # One CPU thread per model server.
    assert all(
        "--threads" in t.args and t.args[t.args.index("--threads") + 1] == "1" for t in spec.tiers
    )
