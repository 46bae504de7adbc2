"""Fitting the scorer and grouped cross-validation: determinism, no leaks, recovery of signal."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zeta_router.quality import fit as fitmod
from zeta_router.quality import metrics
from zeta_router.quality.fit import (
    FIXED_WEIGHTS,
    FitConfig,
    FitError,
    LinearModel,
    cross_validate,
    fit,
    group_folds,
    target_values,
)
from zeta_router.scoring.features import FEATURE_INDEX, FEATURE_NAMES
from zeta_router.scoring.scorer import Scorer

SIGNAL = "log_prompt_tokens"
NOISE = "negations"


def synthetic(n: int = 1200, groups: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """Prompts whose SIGNAL feature raises the chance that only the strong model is right."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, len(FEATURE_NAMES)))
    x[:, FEATURE_INDEX[SIGNAL]] = rng.normal(4.0, 1.0, n)
    x[:, FEATURE_INDEX[NOISE]] = rng.normal(0.0, 1.0, n)
    p_gain = 1 / (1 + np.exp(-(x[:, FEATURE_INDEX[SIGNAL]] - 4.0) * 1.5))
    u = rng.random(n)
    gain = u < 0.5 * p_gain
    loss = (u > 0.9) & ~gain
    weak = np.where(gain, False, np.where(loss, True, rng.random(n) < 0.7))
    strong = np.where(gain, True, np.where(loss, False, weak))
    return {
        "x": x,
        "weak": weak.astype(bool),
        "strong": strong.astype(bool),
        "groups": np.arange(n) % groups,
        "prompts": np.array([f"prompt {i}" for i in range(n)]),
    }


def test_fit_recovers_the_signal() -> None:
    d = synthetic()
    cfg = FitConfig(features=(SIGNAL, NOISE), fixed={}, shrink_to="zero", l2=0.001)
    model = fit(d["x"], d["weak"], d["strong"], cfg)
    assert model.coef[FEATURE_INDEX[SIGNAL]] > 0
    assert abs(model.coef[FEATURE_INDEX[NOISE]]) < 0.2 * model.coef[FEATURE_INDEX[SIGNAL]]
    s = metrics.evaluate("fit", model.decision(d["x"]), d["weak"], d["strong"])
    assert s.apgr > 0.7


def test_fit_is_deterministic() -> None:
    d = synthetic()
    a = fit(d["x"], d["weak"], d["strong"])
    b = fit(d["x"], d["weak"], d["strong"])
    assert np.array_equal(a.coef, b.coef)
    assert a.bias == b.bias


def test_cross_validation_is_deterministic_for_a_seed() -> None:
    d = synthetic()
    args = (d["x"], d["weak"], d["strong"], d["groups"], list(d["prompts"]))
    one = cross_validate(*args, k=4, seed=7)
    two = cross_validate(*args, k=4, seed=7)
    other = cross_validate(*args, k=4, seed=8)
    assert np.array_equal(one.decision, two.decision)
    assert np.array_equal(one.folds, two.folds)
    assert not np.array_equal(one.folds, other.folds)


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (5, 1), (5, 2), (12, 0), (40, 3)])
def test_group_folds_keep_each_group_whole(k: int, seed: int) -> None:
    groups = np.repeat(np.arange(12), np.arange(1, 13))
    folds = group_folds(groups, k, seed)
    for g in np.unique(groups):
        assert len(set(folds[groups == g].tolist())) == 1
    assert len(set(folds.tolist())) == min(k, 12)


def test_group_folds_errors() -> None:
    with pytest.raises(FitError, match="at least 2 folds"):
        group_folds(np.array([0, 1, 2]), 1, 0)
    with pytest.raises(FitError, match="at least 2 groups"):
        group_folds(np.array([4, 4, 4]), 3, 0)


def test_cross_validation_never_trains_on_a_test_subject(monkeypatch: pytest.MonkeyPatch) -> None:
    d = synthetic(n=240, groups=8)
    # Row number hidden in a feature that is not fitted, so the training rows can be traced.
    marker = FEATURE_INDEX["code_blocks"]
    d["x"][:, marker] = np.arange(240)
    # The same question filed under two subjects: rows 0 (group 0) and 1 (group 1).
    prompts = list(d["prompts"])
    prompts[1] = prompts[0]
    seen: list[set[int]] = []
    real_fit = fitmod.fit

    def recording_fit(
        x: np.ndarray, weak: np.ndarray, strong: np.ndarray, cfg: FitConfig
    ) -> LinearModel:
        seen.append({int(r) for r in x[:, marker]})
        return real_fit(x, weak, strong, cfg)

    monkeypatch.setattr(fitmod, "fit", recording_fit)
    cv = cross_validate(d["x"], d["weak"], d["strong"], d["groups"], prompts, k=4, seed=0)
    assert len(seen) == 4
    for f, train_rows in zip(np.unique(cv.folds), seen, strict=True):
        test_rows = set(np.nonzero(cv.folds == f)[0].tolist())
        assert not train_rows & test_rows
        train_groups = {int(d["groups"][r]) for r in train_rows}
        test_groups = {int(d["groups"][r]) for r in test_rows}
        assert not train_groups & test_groups
        # The duplicate of a test prompt filed under another subject is not trained on either.
        if 0 in test_rows:
            assert 1 not in train_rows
        if 1 in test_rows:
            assert 0 not in train_rows
    assert cv.dropped_duplicates == 2


def test_cross_validated_signal_survives() -> None:
    d = synthetic()
    cfg = FitConfig(features=(SIGNAL, NOISE), fixed={}, shrink_to="zero", l2=0.01)
    cv = cross_validate(d["x"], d["weak"], d["strong"], d["groups"], list(d["prompts"]), cfg, k=4)
    c = metrics.stratified_curve(cv.decision, d["weak"], d["strong"], cv.folds)
    assert c.apgr() > 0.7


def test_spread_puts_the_median_at_half_and_sets_the_decile_distance() -> None:
    d = synthetic()
    model = fit(d["x"], d["weak"], d["strong"], FitConfig(features=(SIGNAL, NOISE), fixed={}))
    scores = Scorer(model.to_weights()).score_matrix(d["x"])
    assert float(np.median(scores)) == pytest.approx(0.5, abs=1e-3)
    lo, hi = np.quantile(scores, [0.1, 0.9])

    def logit(p: float) -> float:
        return math.log(p / (1 - p))

    # The 10th..90th percentile range spans what 0.2..0.8 spans (in logits).
    assert logit(hi) - logit(lo) == pytest.approx(2 * logit(0.8), rel=1e-3)


def test_no_spread_keeps_the_probability_scale() -> None:
    d = synthetic()
    cfg = FitConfig(features=(SIGNAL,), fixed={}, spread=None, target="gain", l2=0.0001)
    model = fit(d["x"], d["weak"], d["strong"], cfg)
    p = 1 / (1 + np.exp(-model.decision(d["x"])))
    # A logistic fit with an intercept matches the base rate on the training data.
    assert float(p.mean()) == pytest.approx(float((d["strong"] & ~d["weak"]).mean()), abs=1e-3)


def test_fixed_weights_are_kept_exactly_and_constant_features_get_zero() -> None:
    d = synthetic()
    model = fit(d["x"], d["weak"], d["strong"], FitConfig(features=(SIGNAL, "tools")))
    w = model.to_weights().weights
    for name, value in FIXED_WEIGHTS.items():
        if name != "tools":
            assert w[name] == value
    # "tools" is fitted here but constant (0) in the data: nothing to learn, weight 0.
    assert "tools" not in w


def test_equal_shrinkage_pulls_weights_together() -> None:
    d = synthetic()
    feats = (SIGNAL, NOISE)
    loose = fit(d["x"], d["weak"], d["strong"], FitConfig(features=feats, fixed={}, l2=1e-6))
    tight = fit(d["x"], d["weak"], d["strong"], FitConfig(features=feats, fixed={}, l2=1e6))
    std = d["x"][:, [FEATURE_INDEX[f] for f in feats]].std(axis=0)

    def ratio(m: LinearModel) -> float:
        a, b = (m.coef[FEATURE_INDEX[f]] * s for f, s in zip(feats, std, strict=True))
        return float(b / a)

    assert abs(ratio(loose)) < 0.3
    assert ratio(tight) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "accuracy"}, "unknown target"),
        ({"l2": -1.0}, "l2"),
        ({"l2": math.nan}, "l2"),
        ({"spread": 0.4}, "spread"),
        ({"features": ()}, "no features"),
        ({"features": ("nope",)}, "unknown features: nope"),
        ({"fixed": {"bogus": 1.0}}, "unknown features: bogus"),
        ({"features": (SIGNAL, SIGNAL)}, "more than once"),
        ({"shrink_to": "one"}, "shrink_to"),
    ],
)
def test_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FitError, match=message):
        FitConfig(**kwargs)  # type: ignore[arg-type]


def test_single_valued_target_is_an_error() -> None:
    x = np.ones((4, len(FEATURE_NAMES)))
    same = np.array([True, True, False, False])
    with pytest.raises(FitError, match="single value"):
        fit(x, same, same, FitConfig(target="gain"))


def test_targets() -> None:
    weak = np.array([True, False, True, False])
    strong = np.array([True, True, False, False])
    assert list(target_values("gain", weak, strong)) == [0, 1, 0, 0]
    assert list(target_values("net_gain", weak, strong)) == [0.5, 1, 0, 0.5]
    assert list(target_values("weak_fails", weak, strong)) == [0, 1, 0, 1]


def test_weights_round_trip_and_score_the_same() -> None:
    d = synthetic()
    model = fit(d["x"], d["weak"], d["strong"])
    weights = model.to_weights("test")
    back = LinearModel.from_weights(weights)
    scorer = Scorer(weights)
    z = back.decision(d["x"][:50])
    assert np.allclose(scorer.score_matrix(d["x"][:50]), 1 / (1 + np.exp(-z)))
    assert np.allclose(model.decision(d["x"][:50]), z, atol=1e-4)
