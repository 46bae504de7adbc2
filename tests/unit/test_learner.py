"""The learner: refit, prune to the ConfigMap budget, and the held-out adoption check."""

from __future__ import annotations

import numpy as np
import pytest

from support.learning import synthetic
from zeta_router.quality import metrics
from zeta_router.scoring.apgr import UndefinedApgrError, gain_apgr
from zeta_router.scoring.features import FEATURE_NAMES
from zeta_router.scoring.learned import CompiledCorrection, bytes_per_context, serialised_size
from zeta_router.scoring.learner import (
    MIN_DECISIVE,
    Labelled,
    LearnerConfig,
    LearnError,
    apgr,
    fit,
    prune,
    refit,
)
from zeta_router.scoring.scorer import default_scorer


def test_gain_apgr_is_the_apgr_of_correctness_pairs() -> None:
    rng = np.random.default_rng(3)
    weak = rng.random(500) < 0.6
    strong = rng.random(500) < 0.8
    scores = np.round(rng.random(500), 1)  # many ties
    want = metrics.curve(scores, weak, strong).apgr()
    got = gain_apgr(scores, strong.astype(float) - weak.astype(float))
    assert got == pytest.approx(want, abs=1e-12)
    with pytest.raises(UndefinedApgrError, match="no better"):
        gain_apgr(scores, -np.abs(rng.random(500)))


def test_refit_learns_the_topics_and_is_adopted() -> None:
    data = synthetic(600, seed=1)
    prior = default_scorer()
    zero = CompiledCorrection.zero()
    step = refit(data, prior, zero, LearnerConfig(min_labels=200))
    assert step.adopt, step.reason
    assert step.apgr_before is not None
    assert step.apgr_after is not None
    assert step.apgr_after > step.apgr_before + 0.2
    assert step.held_out == 120
    assert step.trained_on == 480
    # The candidate is what routers would run: decoded from its serialised form.
    assert step.candidate is not None
    again = CompiledCorrection.from_model(step.candidate.to_model())
    assert np.array_equal(again.keys, step.candidate.keys)
    assert np.allclose(again.values, step.candidate.values)
    # And it generalises to requests it never saw.
    fresh = synthetic(400, seed=2)
    before, after = apgr(prior, zero, fresh), apgr(prior, step.candidate, fresh)
    assert before is not None
    assert after is not None
    assert after > before + 0.2


def test_a_model_learned_from_inverted_labels_is_refused() -> None:
    prior = default_scorer()
    good = refit(synthetic(600, seed=1), prior, CompiledCorrection.zero(), LearnerConfig())
    assert good.adopt
    assert good.candidate is not None
    # Labels that say the opposite (older ones inverted, the recent held-out ones true): the
    # candidate fitted on them ranks the held-out requests worse than the model in use.
    bad_train = synthetic(800, seed=4, invert=True)
    recent = synthetic(200, seed=5)
    data = Labelled(
        np.vstack([bad_train.x, recent.x]),
        [*bad_train.indices, *recent.indices],
        np.concatenate([bad_train.y, recent.y]),
    )
    step = refit(data, prior, good.candidate, LearnerConfig(held_out_share=0.2))
    assert not step.adopt
    assert step.apgr_after is not None
    assert step.apgr_before is not None
    assert step.apgr_after < step.apgr_before
    assert "does not beat" in step.reason


def test_too_few_labels_and_no_gain_are_reported_not_fitted() -> None:
    prior = default_scorer()
    data = synthetic(150, seed=1)
    step = refit(data, prior, CompiledCorrection.zero(), LearnerConfig(min_labels=200))
    assert not step.adopt
    assert step.candidate is None
    assert "fewer than the 200" in step.reason
    # Only ties: no evidence to judge by.
    flat = Labelled(data.x, data.indices, np.full(len(data), 0.5))
    step = refit(flat, prior, CompiledCorrection.zero(), LearnerConfig(min_labels=100))
    assert not step.adopt
    assert "too little evidence" in step.reason
    # Evidence, but the larger tier loses as often as it wins: APGR is undefined.
    even = Labelled(data.x, data.indices, np.tile([0.0, 1.0], len(data) // 2))
    step = refit(even, prior, CompiledCorrection.zero(), LearnerConfig(min_labels=100))
    assert not step.adopt
    assert "does no better" in step.reason


def test_refit_is_deterministic_and_regularised_towards_no_correction() -> None:
    prior = default_scorer()
    data = synthetic(400, seed=7)
    cfg = LearnerConfig()
    assert cfg.shrink_to == "zero"
    a = fit(data, prior, CompiledCorrection.zero(), cfg)
    b = fit(data, prior, CompiledCorrection.zero(), cfg)
    assert np.array_equal(a.keys, b.keys)
    assert np.array_equal(a.values, b.values)
    assert np.abs(a.values).max() > 0.05
    # The fit is the same whichever correction it starts from: the penalty is centred on no
    # correction, not on the model in use (which would let refits drift towards overfitting).
    again = fit(data, prior, a, cfg)
    wa = dict(zip(a.keys.tolist(), a.values, strict=True))
    wg = dict(zip(again.keys.tolist(), again.values, strict=True))
    assert max(abs(wa.get(k, 0.0) - wg.get(k, 0.0)) for k in wa.keys() | wg.keys()) < 0.02
    # With a heavy penalty the hashed and feature weights shrink to nothing.
    stiff = fit(data, prior, a, LearnerConfig(l2=1e6, l2_features=1e6))
    assert np.abs(stiff.values).max() < 1e-3
    # (feature weights in standardised units: the penalty's own scale)
    assert np.abs(stiff.coef * data.x.std(axis=0)).max() < 1e-3


def test_shrink_to_current_stays_at_the_model_in_use_under_a_heavy_penalty() -> None:
    prior = default_scorer()
    data = synthetic(400, seed=7)
    a = fit(data, prior, CompiledCorrection.zero(), LearnerConfig())
    stiff = fit(data, prior, a, LearnerConfig(l2=1e6, l2_features=1e6, shrink_to="current"))
    common = np.intersect1d(a.keys, stiff.keys)
    wa = dict(zip(a.keys.tolist(), a.values, strict=True))
    ws = dict(zip(stiff.keys.tolist(), stiff.values, strict=True))
    assert max(abs(wa[k] - ws[k]) for k in common.tolist()) < 1e-3
    assert np.allclose(stiff.coef, a.coef, atol=1e-3)


@pytest.mark.parametrize("contexts", [1, 3, 32])
def test_pruned_models_fit_the_configmap_budget(contexts: int) -> None:
    rng = np.random.default_rng(0)
    keys = np.sort(rng.choice(1 << 18, size=150_000, replace=False)).astype(np.int64)
    big = CompiledCorrection(
        bits=18,
        bias=0.3,
        coef=rng.normal(0, 0.1, len(FEATURE_NAMES)),
        keys=keys,
        values=rng.normal(0, 0.2, keys.size),
    )
    budget = bytes_per_context(contexts)
    small = prune(big, budget)
    size = serialised_size(small.to_model())
    assert size <= budget
    assert small.keys.size > budget / 4  # and it uses the room it has
    # The largest weights are the ones kept.
    kept = np.abs(small.values).min()
    dropped = np.abs(big.values[~np.isin(big.keys, small.keys)]).max()
    assert kept >= dropped - small.to_model().ngram_scale
    assert contexts * budget <= 640 * 1024


def test_config_is_checked() -> None:
    with pytest.raises(LearnError, match="held_out_share"):
        LearnerConfig(held_out_share=1.0)
    with pytest.raises(LearnError, match="min_labels"):
        LearnerConfig(min_labels=40, min_held_out=50)
    with pytest.raises(LearnError, match="l2"):
        LearnerConfig(l2=0.0)
    with pytest.raises(LearnError, match="shrink_to"):
        LearnerConfig(shrink_to="anchor")  # type: ignore[arg-type]
    with pytest.raises(LearnError, match="disagree"):
        Labelled(np.zeros((2, len(FEATURE_NAMES))), [], np.zeros(2))


def test_the_default_config_does_not_judge_on_too_few_decisive_labels() -> None:
    """A held-out set of mostly ties (as on math word problems, where both tiers are usually
    right) is not judged until it holds ``MIN_DECISIVE`` decisive labels."""
    cfg = LearnerConfig.for_labels(200)
    assert cfg.min_evidence == MIN_DECISIVE
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, len(FEATURE_NAMES)))
    idx = [np.array([i % 7], dtype=np.int64) for i in range(n)]
    # 30 % decisive: 80 held out carry about 24 labels' evidence.
    y = np.where(rng.random(n) < 0.3, (rng.random(n) < 0.8).astype(float), 0.5)
    step = refit(Labelled(x, idx, y), default_scorer(), CompiledCorrection.zero(), cfg)
    assert not step.adopt
    assert step.candidate is None
    assert "too little evidence" in step.reason
    # Small minLabels keep a bar they can reach.
    small = LearnerConfig.for_labels(60)
    assert small.min_evidence <= 0.3 * 60
