"""The logistic scorer and the shipped default weights."""

from __future__ import annotations

import json
import math
from importlib import resources

import numpy as np
import pytest

from zeta_router.api.routing import ScorerWeights
from zeta_router.scoring.features import FEATURE_NAMES, extract, from_prompt, matrix, vector
from zeta_router.scoring.scorer import Scorer, default_scorer, default_weights

CHIT_CHAT = "What is the capital of France?"
MULTI_PART = "\n".join(
    [
        "I need help with three related tasks. Reason step by step and justify each part.",
        "",
        "1. Prove that the sum of the first n odd numbers is n^2 by induction, and explain",
        "   why the base case matters.",
        "2. Derive a closed form for the recurrence T(n) = 2T(n/2) + n and analyse its",
        "   asymptotic complexity.",
        "3. Implement the algorithm of part 2 in Python and show where part 1 is used:",
        "",
        "```python",
        "def merge_sort(xs):",
        "    if len(xs) <= 1:",
        "        return xs",
        "    mid = len(xs) // 2",
        "    return merge(merge_sort(xs[:mid]), merge_sort(xs[mid:]))",
        "```",
        "",
        "Finally, compare the derivation with measured running times and discuss any gap.",
    ]
)


def test_default_weights_are_valid_and_name_known_features() -> None:
    w = default_weights()
    assert set(w.weights) <= set(FEATURE_NAMES)
    assert w.source
    assert all(math.isfinite(v) for v in w.weights.values())
    # The packaged file is exactly what the model reads.
    raw = json.loads(
        resources.files("zeta_router.scoring").joinpath("default_weights.json").read_text()
    )
    assert ScorerWeights.model_validate(raw) == w
    assert default_scorer().weights == w


def test_score_is_the_logistic_of_the_weighted_sum() -> None:
    w = ScorerWeights(bias=-1.0, weights={"log_prompt_tokens": 0.5, "tools": 2.0})
    s = Scorer(w)
    f = {"log_prompt_tokens": 4.0, "tools": 1.0}
    assert s.decision(f) == pytest.approx(3.0)
    assert s.score(f) == pytest.approx(1 / (1 + math.exp(-3.0)))
    assert s.score({}) == pytest.approx(1 / (1 + math.exp(1.0)))


def test_extreme_logits_stay_in_range() -> None:
    s = Scorer(ScorerWeights(bias=0.0, weights={"log_prompt_tokens": 1e6}))
    assert s.score({"log_prompt_tokens": 10.0}) == 1.0
    assert s.score({"log_prompt_tokens": -10.0}) == 0.0
    assert 0.0 <= s.score({"log_prompt_tokens": 1e-9}) <= 1.0


def test_unknown_feature_is_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(ValueError, match="unknown features: nope") as err:
        Scorer(ScorerWeights(weights={"nope": 1.0, "tools": 1.0}))
    assert "log_prompt_tokens" in str(err.value)


@pytest.mark.parametrize(
    "weights",
    [
        ScorerWeights(bias=math.nan),
        ScorerWeights(weights={"tools": math.inf}),
        ScorerWeights(weights={"tools": -math.inf}),
    ],
)
def test_non_finite_weights_are_refused(weights: ScorerWeights) -> None:
    with pytest.raises(ValueError, match="finite"):
        Scorer(weights)


def test_all_scoring_paths_agree() -> None:
    s = default_scorer()
    prompts = [CHIT_CHAT, MULTI_PART, "", "Explain the proof.\n```\nx = 1;\n```"]
    by_matrix = s.score_matrix(matrix(prompts))
    for p, m in zip(prompts, by_matrix, strict=True):
        body = {"messages": [{"role": "user", "content": p}]}
        expected = s.score(extract(body))
        assert s.score(from_prompt(p)) == expected
        assert s.score_vector(vector(body)) == pytest.approx(expected, abs=1e-15)
        assert s.score_body(body) == pytest.approx(expected, abs=1e-15)
        assert m == pytest.approx(expected, abs=1e-12)


def test_positive_weights_raise_the_score() -> None:
    s = default_scorer()
    base = {"messages": [{"role": "user", "content": "Summarise this paragraph for me."}]}
    plain = s.score_body(base)
    assert s.score_body({**base, "tools": [{"type": "function"}]}) > plain
    assert s.score_body({**base, "response_format": {"type": "json_object"}}) > plain
    longer = {"messages": [{"role": "user", "content": "Summarise this paragraph for me. " * 30}]}
    assert s.score_body(longer) > plain


def test_default_weights_route_chit_chat_small_and_hard_multi_part_work_large() -> None:
    """What the router's acceptance test relies on, with room around the usual thresholds
    (0.4 to 0.6 for two tiers)."""
    s = default_scorer()
    assert s.score(from_prompt(CHIT_CHAT)) < 0.2
    assert s.score(from_prompt(MULTI_PART)) > 0.8
    for small in ("hi", "Hello! How are you today?", "Tell me a joke."):
        assert s.score(from_prompt(small)) < 0.2


def test_scores_are_spread_over_the_unit_interval() -> None:
    # Not all crammed around one value: thresholds between 0.2 and 0.8 mean something.
    rng = np.random.default_rng(0)
    text = "the court held that a contract for the sale of land must be in writing and signed"
    words = text.split(" ")
    prompts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(3, 400, size=200)]
    scores = default_scorer().score_matrix(matrix(prompts))
    assert scores.min() < 0.3
    assert scores.max() > 0.7
