"""The small tier's answer as a routing signal: an answer-side judge and a cascade (a study).

A *cascade* lets the small tier answer every request; when a judge doubts the answer, the
request goes to the large tier, whose answer replaces it. Escalating the share ``x`` of requests
the judge doubts most gives the accuracy ``perf(x)`` of a ranking by doubt, so the cascade's
quality at a given large-tier share is read off the same PGR curve as a router's
(``quality.metrics``). Its cost is not a router's: every request pays a small-tier call, so at
equal large-tier share the cascade spends ``x`` more small calls, and a request it escalates
waits for the small tier's whole answer first.

The judge is cheap and needs no model call: features of the answer
(``scoring.judge.answer_features``: the arithmetic it states re-evaluated, a final number or
not, hedging, its length against the question's) and a small learned part, a logistic
regression on those features fitted on labelled answers (``fit_judge``).
``cross_validated_doubt`` gives honest out-of-fold doubts.

The study behind ``zeta-router eval --cascade`` and docs/routing-quality.md; the judge fitted
here on the math dev set is what cascade contexts of the router run
(``scoring/default_judge.json``, ``router.cascade``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from zeta_router.quality import metrics
from zeta_router.quality.fit import FitConfig, fit
from zeta_router.scoring.judge import ANSWER_FEATURES, JudgeWeights, answer_features

FloatArray = NDArray[np.float64]


def answer_matrix(questions: Sequence[str], answers: Sequence[str]) -> FloatArray:
    return np.array(
        [answer_features(q, a) for q, a in zip(questions, answers, strict=True)], dtype=np.float64
    ).reshape(len(answers), len(ANSWER_FEATURES))


def rule_doubt(x: FloatArray) -> FloatArray:
    """The judge without learning: a wrong sum, no final number, a cut-off or hedged answer
    (hand-set, one unit each; arithmetic errors count double)."""
    col = {n: i for i, n in enumerate(ANSWER_FEATURES)}
    out: FloatArray = (
        2.0 * x[:, col["arithmetic_errors"]]
        + x[:, col["no_final_number"]]
        + x[:, col["truncated"]]
        + x[:, col["hedging"]]
        + 0.5 * x[:, col["non_integer_final"]]
    )
    return out


#: Penalty of the judge's learned part (per answer, on standardised features).
JUDGE_L2 = 0.01


def fit_judge(
    x: FloatArray, weak_correct: NDArray[np.bool_], l2: float = JUDGE_L2, source: str | None = None
) -> JudgeWeights:
    """The judge's learned part: penalised logistic regression (the scorer's own Newton fit)
    of "the small tier's answer is wrong" on ``answer_matrix`` rows, in raw feature units."""
    from zeta_router.scoring.features import FEATURE_NAMES

    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    std = np.where(sd > 1e-12, sd, 1.0)
    z = (x - mean) / std
    # ``fit`` works on the scorer's feature columns; give it the answer features in their place.
    wide = np.zeros((z.shape[0], len(FEATURE_NAMES)))
    wide[:, : z.shape[1]] = z
    cfg = FitConfig(
        target="weak_fails",
        features=FEATURE_NAMES[: z.shape[1]],
        fixed={},
        shrink_to="zero",
        l2=l2,
        spread=None,
    )
    # weak_fails = not weak; the strong column is unused by that target.
    model = fit(wide, weak_correct, np.ones_like(weak_correct), cfg)
    coef = np.where(sd > 1e-12, model.coef[: z.shape[1]] / std, 0.0)
    bias = model.bias - float(np.dot(coef, mean))
    return JudgeWeights(
        bias=float(f"{bias:.6g}"),
        weights={
            n: float(f"{w:.6g}") for n, w in zip(ANSWER_FEATURES, coef, strict=True) if w != 0.0
        },
        source=source,
    )


def judge_logits(weights: JudgeWeights, x: FloatArray) -> FloatArray:
    coef = np.array([weights.weights.get(n, 0.0) for n in ANSWER_FEATURES])
    out: FloatArray = weights.bias + x @ coef
    return out


def cross_validated_doubt(
    x: FloatArray, weak_correct: NDArray[np.bool_], folds: NDArray[np.int64], l2: float = JUDGE_L2
) -> FloatArray:
    """Out-of-fold doubts: each fold judged by a judge fitted on the other folds."""
    out = np.zeros(x.shape[0])
    for f in np.unique(folds):
        test = folds == f
        out[test] = judge_logits(fit_judge(x[~test], weak_correct[~test], l2), x[test])
    return out


def random_folds(n: int, k: int, seed: int) -> NDArray[np.int64]:
    out: NDArray[np.int64] = (np.random.default_rng(seed).permutation(n) % k).astype(np.int64)
    return out


@dataclass(frozen=True)
class CostPoint:
    """At one cost: the cascade's large-tier share and accuracy, and a prompt router's."""

    cascade_share: float
    cascade_accuracy: float
    router_share: float
    router_accuracy: float


def at_equal_cost(
    cascade: metrics.Curve, router: metrics.Curve, share: float, cost_ratio: float
) -> CostPoint:
    """Compare at equal cost, a small call costing ``cost_ratio`` of a large one.

    The cascade escalating ``share`` pays ``small + share * large`` per request; a router
    sending ``s`` to the large tier pays ``(1 - s) * small + s * large``. Equal when
    ``s = share / (1 - cost_ratio)`` (capped at 1: then the router sends everything large).
    """
    if not 0.0 <= cost_ratio < 1.0:
        raise ValueError(f"cost_ratio must be in [0, 1), got {cost_ratio}")
    s = min(1.0, share / (1.0 - cost_ratio))
    return CostPoint(share, cascade.perf_at(share), s, router.perf_at(s))


#: Small-call cost as a share of a large call, at which ``study`` compares at equal cost.
COST_RATIOS: tuple[float, ...] = (0.1, 0.25, 0.5)
STUDY_SHARES: tuple[float, ...] = (0.1, 0.2, 0.3)


@dataclass(frozen=True)
class Study:
    """The cascade against routing on the prompt, on the same cross-validation folds."""

    summaries: list[metrics.Summary]
    curves: dict[str, metrics.Curve]
    apgr_by_repeat: dict[str, list[float]]
    equal_cost: dict[float, list[CostPoint]]
    folds: int
    repeats: int
    seed: int

    def as_dict(self) -> dict[str, object]:
        return {
            "method": "random folds; the judge's learned part fitted on the other folds; "
            "each fold escalates (or routes) its own top share",
            "folds": self.folds,
            "repeats": self.repeats,
            "seed": self.seed,
            "results": [s.as_dict() for s in self.summaries],
            "apgr_by_repeat": self.apgr_by_repeat,
            "equal_cost": {
                str(ratio): [vars(p) for p in points] for ratio, points in self.equal_cost.items()
            },
        }


CASCADE = "cascade (judge)"
CASCADE_RULES = "cascade (rules only)"


def study(
    prompts: Sequence[str],
    weak_answers: Sequence[str],
    weak: NDArray[np.bool_],
    strong: NDArray[np.bool_],
    router_scores: FloatArray,
    length: FloatArray,
    *,
    folds: int = 5,
    repeats: int = 10,
    seed: int = 0,
    router_name: str = "router (prompt)",
) -> Study:
    """Cross-validated cascade figures beside a prompt router (``router_scores``, fitted
    elsewhere: the shipped prior), prompt length, random and oracle on the same folds. A
    cascade's large-tier share is the share it escalates; the equal-cost points compare it with
    the router at the share that costs the same (``at_equal_cost``)."""
    n = len(prompts)
    if n < 2 * folds:
        raise metrics.MetricError(f"{n} prompts are too few for {folds} folds")
    x = answer_matrix(prompts, weak_answers)
    rules = rule_doubt(x)
    per: dict[str, list[metrics.Curve]] = {
        k: [] for k in (CASCADE, CASCADE_RULES, router_name, "prompt length", "random", "oracle")
    }
    fixed = {
        CASCADE_RULES: rules,
        router_name: router_scores,
        "prompt length": length,
        "random": metrics.random_scores(n),
        "oracle": metrics.oracle_scores(weak, strong),
    }
    for r in range(repeats):
        f = random_folds(n, folds, seed + r)
        doubt = cross_validated_doubt(x, weak, f)
        per[CASCADE].append(metrics.stratified_curve(doubt, weak, strong, f))
        for name, scores in fixed.items():
            per[name].append(metrics.stratified_curve(scores, weak, strong, f))
    curves = {k: metrics.mean_curve(v) for k, v in per.items()}
    summaries = [metrics.summarise(k, c, n) for k, c in curves.items()]
    equal_cost = {
        ratio: [at_equal_cost(curves[CASCADE], curves[router_name], s, ratio) for s in STUDY_SHARES]
        for ratio in COST_RATIOS
    }
    return Study(
        summaries=summaries,
        curves=curves,
        apgr_by_repeat={k: [c.apgr() for c in v] for k, v in per.items()},
        equal_cost=equal_cost,
        folds=folds,
        repeats=repeats,
        seed=seed,
    )
