"""Fitting the router's logistic scorer from labelled prompts, and grouped cross-validation.

The model is the serving format itself: ``score = sigmoid(bias + sum(w[f] * feature[f]))``.
A chosen set of features is fitted by Newton's method (penalised logistic regression on
standardised features); features the data cannot inform (tools, JSON output, turns, system
prompt, code on a single-turn multiple-choice benchmark) get fixed, hand-set weights instead.
numpy only; deterministic (no randomness in the fit; the seed only decides the folds).

Targets (what "deserves the large model" means for one prompt):

- ``gain``: the weak model fails and the strong one succeeds (binary);
- ``net_gain``: cost-weighted: 1 when only the strong model is right, 0 when only the weak one
  is, 0.5 when they agree, so prompts the strong model gets wrong push the score down;
- ``weak_fails``: the weak model fails, whatever the strong one does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from zeta_router.api.routing import ScorerWeights
from zeta_router.scoring.features import FEATURE_NAMES

Target = Literal["gain", "net_gain", "weak_fails"]
TARGETS: tuple[Target, ...] = ("gain", "net_gain", "weak_fails")

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

# What the data fits by default: how much text there is, and how qualified the question is.
# Chosen for meaning (a longer, more qualified question is harder), then compared on grouped
# cross-validation against the full feature set, which does worse on unseen subjects (see
# docs/routing-quality.md).
#
# Subordinate clauses per sentence (clauses_per_sentence) used to count too. It describes how
# a family of requests is written, not how hard one request of that family is: it fitted
# MMLU's subjects a little, and on math word problems, a family the fit never saw, it was the
# largest term of the score and carried nothing (its own APGR there 0.527), so the scorer
# ranked them worse than prompt length did (docs/routing-quality.md, "Math and word
# problems"). Without it both MMLU's grouped figures and the word problems' are better.
# Words per sentence stays: it carries a little on word problems (0.563), and in chat traffic
# it is much of what tells a substantial request from a short one.
#
# The relations between amounts a request states (quantity_relations: "half", "twice",
# "percent", "more than", "per", "left"...) count the steps of a word problem, which length
# only stands in for. Fitted here on MMLU like the rest (never on the word problems it is
# judged on): MMLU's grouped figures improve, and on math word problems the prior leads
# prompt length by +0.018 where it was level (docs/routing-quality.md).
FITTED_FEATURES: tuple[str, ...] = (
    "log_prompt_tokens",
    "log_question_tokens",
    "log_option_chars",
    "negations",
    "words_per_sentence",
    "quantity_relations",
)

# Fixed weights, in logits of the final score, for what a single-turn benchmark cannot teach:
# the shape of the request (turns, tools, structured output) and cues that a demanding answer
# is wanted (code, formulas, a request to prove or explain, several parts). Set by hand; modest
# on purpose. On the calibrated scale (see ``FitConfig.spread``) +1.0 moves a median prompt from
# 0.50 to about 0.73.
#
# Arithmetic operators (math_operators 0.1) and the phrases of math word problems ("calculate",
# "how many", then part of reasoning_cues) used to count too. Grouped cross-validation says they
# cost routing quality on all subjects, within the math subjects, and most on word problems,
# where they made these weights lose to prompt length; see docs/routing-quality.md, "Math and
# word problems".
FIXED_WEIGHTS: Mapping[str, float] = {
    "log_turns": 0.4,
    "log_system_tokens": 0.05,
    "log_max_tokens": 0.06,
    "tools": 0.8,
    "json_output": 0.5,
    "code_blocks": 0.6,
    "code_lines": 1.5,
    "latex": 0.3,
    "reasoning_cues": 0.4,
    "multi_part": 0.4,
    "non_latin": 0.5,
}


class FitError(ValueError):
    """The data cannot be fitted (e.g. a single class in the target)."""


@dataclass(frozen=True)
class FitConfig:
    """How to fit a scorer.

    ``features`` are fitted from the data; ``fixed`` are added with the given weights, not
    fitted (a feature in both is fitted). The penalty ``l2`` (per prompt, on standardised
    weights) pulls the fitted weights towards equal weights whose common scale is free
    (``shrink_to="equal"``) or towards zero (``"zero"``, plain ridge).

    With ``spread`` set, the fitted part is rescaled so that its 10th..90th percentile range
    on the training prompts spans as many logits as ``1 - spread``..``spread`` does, and the
    bias is set so that the median training prompt scores 0.5: scores then read as "how
    demanding compared with the training prompts", and thresholds spread over [0, 1].
    ``spread=None`` keeps the logistic model's own scale (a probability of the target).
    """

    target: Target = "net_gain"
    l2: float = 10.0
    shrink_to: Literal["equal", "zero"] = "equal"
    features: tuple[str, ...] = FITTED_FEATURES
    fixed: Mapping[str, float] = field(default_factory=lambda: dict(FIXED_WEIGHTS))
    spread: float | None = 0.8
    max_iter: int = 100
    tol: float = 1e-9

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise FitError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise FitError(f"l2 must be a number >= 0, got {self.l2}")
        if self.shrink_to not in ("equal", "zero"):
            raise FitError(f"shrink_to must be 'equal' or 'zero', got {self.shrink_to!r}")
        if self.spread is not None and not 0.5 < self.spread < 1.0:
            raise FitError(f"spread must be in (0.5, 1), got {self.spread}")
        if not self.features:
            raise FitError("no features to fit")
        for what, names in (("features", self.features), ("fixed weights", self.fixed)):
            unknown = sorted(set(names) - set(FEATURE_NAMES))
            if unknown:
                raise FitError(f"{what} name unknown features: {', '.join(unknown)}")
        if len(set(self.features)) != len(self.features):
            raise FitError("features are listed more than once")

    def describe(self) -> str:
        spread = "none" if self.spread is None else f"{self.spread:g}"
        return (
            f"target={self.target} l2={self.l2:g} shrink_to={self.shrink_to} spread={spread} "
            f"features={','.join(self.features)} fixed={len(self.fixed_only)}"
        )

    @property
    def fixed_only(self) -> dict[str, float]:
        return {k: v for k, v in self.fixed.items() if k not in self.features and v != 0.0}


def target_values(target: Target, weak: NDArray[np.bool_], strong: NDArray[np.bool_]) -> FloatArray:
    if target == "gain":
        return (strong & ~weak).astype(np.float64)
    if target == "net_gain":
        return (1.0 + strong.astype(np.float64) - weak.astype(np.float64)) / 2.0
    if target == "weak_fails":
        return (~weak).astype(np.float64)
    raise FitError(f"unknown target {target!r}")


@dataclass(frozen=True)
class LinearModel:
    """``z = bias + x @ coef`` with one coefficient per ``FEATURE_NAMES`` entry (raw units);
    score = sigmoid(z)."""

    coef: FloatArray
    bias: float

    def decision(self, x: FloatArray) -> FloatArray:
        """``z`` for a feature matrix whose columns are ``FEATURE_NAMES``."""
        out: FloatArray = self.bias + x @ self.coef
        return out

    def to_weights(self, source: str | None = None) -> ScorerWeights:
        return ScorerWeights(
            bias=_round(self.bias),
            weights={
                f: _round(w) for f, w in zip(FEATURE_NAMES, self.coef, strict=True) if _round(w)
            },
            source=source,
        )

    @classmethod
    def from_weights(cls, weights: ScorerWeights) -> LinearModel:
        unknown = sorted(set(weights.weights) - set(FEATURE_NAMES))
        if unknown:
            raise FitError(f"scorer weights name unknown features: {', '.join(unknown)}")
        coef = np.array([weights.weights.get(f, 0.0) for f in FEATURE_NAMES], dtype=np.float64)
        return cls(coef=coef, bias=weights.bias)


def _round(value: float) -> float:
    # Six significant digits keep the JSON readable and change no decision measurably.
    return float(f"{float(value):.6g}")


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out


def _newton(
    x: FloatArray, y: FloatArray, l2: float, cfg: FitConfig, anchor: FloatArray | None
) -> tuple[FloatArray, float]:
    """Penalised logistic regression with soft labels on standardised ``x``.

    The weights are ``c * anchor + delta``: the scale ``c`` along the anchor direction and the
    intercept are free, and ``delta`` carries the L2 penalty, so a large ``l2`` shrinks the
    weights towards the anchor's proportions (towards 0 without an anchor). Minimises
    mean(cross-entropy) + l2/2 * ||delta||^2.
    """
    n, d = x.shape
    free = [np.ones((n, 1))] if anchor is None else [np.ones((n, 1)), (x @ anchor)[:, None]]
    xa = np.hstack([*free, x])
    nf = len(free)
    beta = np.zeros(nf + d)
    p0 = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    beta[0] = math.log(p0 / (1 - p0))
    reg = np.full(nf + d, l2 * n)
    reg[:nf] = 0.0
    # A tiny ridge on everything keeps the Hessian invertible when the anchor column and the
    # features are collinear (they are, by construction).
    eps = 1e-8 * n
    for _ in range(cfg.max_iter):
        p = _sigmoid(xa @ beta)
        grad = xa.T @ (p - y) + (reg + eps) * beta
        h = (xa * (p * (1 - p))[:, None]).T @ xa + np.diag(reg + eps)
        step = np.linalg.solve(h, grad)
        beta -= step
        if not np.all(np.isfinite(beta)):
            raise FitError("the fit diverged (the data may be separable); use a larger l2")
        if float(np.max(np.abs(step))) < cfg.tol:
            break
    w = beta[nf:].copy()
    if anchor is not None:
        w += beta[1] * anchor
    return w, float(beta[0])


def fit(
    x: FloatArray,
    weak: NDArray[np.bool_],
    strong: NDArray[np.bool_],
    cfg: FitConfig | None = None,
) -> LinearModel:
    """Fit on a feature matrix whose columns are ``FEATURE_NAMES`` (see ``features.matrix``)."""
    cfg = cfg or FitConfig()
    y = target_values(cfg.target, weak, strong)
    if y.size == 0:
        raise FitError("no prompts to fit")
    if np.all(y == y[0]):
        raise FitError(f"the target {cfg.target!r} has a single value on these prompts")
    cols = np.array([FEATURE_NAMES.index(f) for f in cfg.features], dtype=np.int64)
    xs = x[:, cols]
    mean = xs.mean(axis=0)
    std = xs.std(axis=0)
    # A feature that does not vary in the data cannot be fitted; it keeps weight 0.
    varying = std > 1e-12
    coef = np.zeros(len(FEATURE_NAMES))
    bias = 0.0
    if varying.any():
        z = (xs[:, varying] - mean[varying]) / std[varying]
        anchor = np.ones(int(varying.sum())) if cfg.shrink_to == "equal" else None
        w_std, b_std = _newton(z, y, cfg.l2, cfg, anchor)
        coef[cols[varying]] = w_std / std[varying]
        bias = b_std - float(np.sum(coef[cols[varying]] * mean[varying]))
    if cfg.spread is not None:
        fitted = bias + x @ coef
        lo, hi = np.quantile(fitted, [0.1, 0.9])
        if hi > lo:
            scale = 2.0 * math.log(cfg.spread / (1.0 - cfg.spread)) / float(hi - lo)
            coef *= scale
            bias *= scale
    for name, w in cfg.fixed_only.items():
        coef[FEATURE_NAMES.index(name)] = w
    if cfg.spread is not None:
        bias -= float(np.median(bias + x @ coef))
    return LinearModel(coef=coef, bias=bias)


def group_folds(groups: IntArray, k: int, seed: int) -> IntArray:
    """A fold number per row such that every group lies in exactly one fold.

    Groups are shuffled with ``seed`` and dealt in that order, each to the fold with the fewest
    rows so far, so folds are of similar size and differ from seed to seed. ``k`` larger than
    the number of groups means one group per fold (leave one group out).
    """
    uniq, counts = np.unique(groups, return_counts=True)
    if k < 2:
        raise FitError(f"cross-validation needs at least 2 folds, got {k}")
    if uniq.size < 2:
        raise FitError("cross-validation needs at least 2 groups (subjects)")
    k = min(k, int(uniq.size))
    rng = np.random.default_rng(seed)
    order = rng.permutation(uniq.size)
    load = np.zeros(k, dtype=np.int64)
    fold_of_group: dict[int, int] = {}
    for gi in order:
        f = int(np.argmin(load))
        fold_of_group[int(uniq[gi])] = f
        load[f] += counts[gi]
    return np.array([fold_of_group[int(g)] for g in groups], dtype=np.int64)


@dataclass(frozen=True)
class CrossValidation:
    """Out-of-fold decision values (``z``) for every row, and the folds used."""

    decision: FloatArray
    folds: IntArray
    dropped_duplicates: int


def cross_validate(
    x: FloatArray,
    weak: NDArray[np.bool_],
    strong: NDArray[np.bool_],
    groups: IntArray,
    prompts: Sequence[str],
    cfg: FitConfig | None = None,
    k: int = 5,
    seed: int = 0,
) -> CrossValidation:
    """Grouped k-fold: each fold's rows are scored by a model fitted on the other folds.

    Besides whole groups, any training row whose prompt text also occurs in the test fold is
    left out of that fold's training (the same question filed under two subjects).
    """
    folds = group_folds(groups, k, seed)
    out = np.zeros(x.shape[0], dtype=np.float64)
    dropped = 0
    for f in np.unique(folds):
        test = folds == f
        test_texts = {prompts[int(i)] for i in np.nonzero(test)[0]}
        train = ~test & np.fromiter((p not in test_texts for p in prompts), bool, len(prompts))
        dropped += int(np.sum(~test) - np.sum(train))
        model = fit(x[train], weak[train], strong[train], cfg)
        out[test] = model.decision(x[test])
    return CrossValidation(decision=out, folds=folds, dropped_duplicates=dropped)
