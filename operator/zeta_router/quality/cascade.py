"""The small tier's answer as a routing signal: an answer-side judge and a cascade (a study).

A *cascade* lets the small tier answer every request; when a judge doubts the answer, the
request goes to the large tier, whose answer replaces it. Escalating the share ``x`` of requests
the judge doubts most gives the accuracy ``perf(x)`` of a ranking by doubt, so the cascade's
quality at a given large-tier share is read off the same PGR curve as a router's
(``quality.metrics``). Its cost is not a router's: every request pays a small-tier call, so at
equal large-tier share the cascade spends ``x`` more small calls, and a request it escalates
waits for the small tier's whole answer first.

The judge is cheap and needs no model call: features of the answer (``answer_features``), the
arithmetic it states re-evaluated, a final number or not, hedging, its length against the
question's; and a small learned part, a logistic regression on those features fitted on labelled
answers (``fit_judge``). ``cross_validated_doubt`` gives honest out-of-fold doubts.

Study code for ``zeta-router eval --cascade`` and docs/routing-quality.md; the router does not
use it (the study found no reason to: see the docs, "The small tier's answer as a signal").
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from zeta_router.quality import metrics
from zeta_router.quality.fit import FitConfig, fit

FloatArray = NDArray[np.float64]

ANSWER_FEATURES: tuple[str, ...] = (
    "no_final_number",
    "no_final_marker",
    "arithmetic_errors",
    "arithmetic_checked",
    "non_integer_final",
    "hedging",
    "log_answer_tokens",
    "answer_to_question",
    "final_not_in_working",
    "truncated",
)

# "a op b = c" as written in working (also inside GSM8K-style <<a*b=c>> annotations).
_NUM = r"-?\d[\d,]*(?:\.\d+)?"
_EQUATION = re.compile(
    rf"({_NUM}(?:\s*[-+*/x\u00d7\u00f7]\s*{_NUM})+)\s*=\s*\$?\s*({_NUM})(?![\d.]*\s*[-+*/x\u00d7\u00f7]\s*\d)"
)
_NUMBER = re.compile(_NUM)
_FINAL_MARKER = re.compile(rf"####\s*\$?\s*({_NUM})|answer is[:\s]*\$?\s*({_NUM})", re.IGNORECASE)
_HEDGES = (
    "however",
    "assum",
    "approximately",
    "round",
    "not possible",
    "cannot",
    "can't",
    "it is unclear",
    "not enough information",
    "actually",
    "i apologize",
    "sorry",
    "mistake",
    "let me re",
    "wait",
    "but since",
)


def _num(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?|[-+*/])")


def _evaluate(expression: str) -> float | None:
    """The value of ``a op b op c ...`` with the usual precedence (* and / before + and -);
    None when it is not such an expression."""
    expr = expression.replace(",", "").replace("\u00d7", "*").replace("\u00f7", "/")
    expr = re.sub(r"(?<=\d)\s*x\s*(?=[-\d])", "*", expr).strip()
    tokens: list[str] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            return None
        tokens.append(m.group(1))
        pos = m.end()
    if tokens and tokens[0] == "-":
        tokens = ["0", *tokens]
    if len(tokens) % 2 == 0 or any((t in "+-*/") != (i % 2 == 1) for i, t in enumerate(tokens)):
        return None
    terms: list[float] = [float(tokens[0])]
    for op, num in zip(tokens[1::2], tokens[2::2], strict=True):
        value = float(num)
        if op == "*":
            terms[-1] *= value
        elif op == "/":
            if value == 0.0:
                return None
            terms[-1] /= value
        else:
            terms.append(value if op == "+" else -value)
    total = math.fsum(terms)
    return total if math.isfinite(total) else None


def answer_features(question: str, answer: str) -> list[float]:
    """Features of the small tier's ``answer`` to ``question``, in ``ANSWER_FEATURES`` order."""
    text = answer.strip()
    checked = errors = 0
    for m in _EQUATION.finditer(text):
        stated, value = _num(m.group(2)), _evaluate(m.group(1))
        if stated is None or value is None:
            continue
        checked += 1
        if abs(stated - value) > max(0.011, 0.011 * abs(value)):
            errors += 1
    marker = _FINAL_MARKER.search(text)
    numbers = _NUMBER.findall(text)
    final = None
    if marker is not None:
        final = _num(marker.group(1) or marker.group(2) or "")
    elif numbers:
        final = _num(numbers[-1])
    working = {_num(n) for n in _NUMBER.findall(text[: marker.start()] if marker else text)}
    lower = text.lower()
    hedges = sum(lower.count(h) for h in _HEDGES)
    a_tokens = len(text) / 4.0
    q_tokens = max(1.0, len(question) / 4.0)
    # Cut off: an annotation left open, or no final marker and an end that ends no sentence.
    truncated = text.count("<<") > text.count(">>") or (
        bool(text) and marker is None and text[-1] not in ".!?)" and not text[-1].isdigit()
    )
    return [
        1.0 if final is None else 0.0,
        1.0 if marker is None else 0.0,
        math.log1p(errors),
        math.log1p(checked),
        1.0 if final is not None and abs(final - round(final)) > 1e-9 else 0.0,
        math.log1p(hedges),
        math.log1p(a_tokens),
        math.log(max(a_tokens, 1.0) / q_tokens),
        1.0 if final is not None and marker is not None and final not in working else 0.0,
        1.0 if truncated else 0.0,
    ]


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


@dataclass(frozen=True)
class Judge:
    """A logistic model of "the small tier's answer is wrong" over ``ANSWER_FEATURES``."""

    coef: FloatArray
    bias: float
    mean: FloatArray
    std: FloatArray

    def doubt(self, x: FloatArray) -> FloatArray:
        out: FloatArray = self.bias + ((x - self.mean) / self.std) @ self.coef
        return out


def fit_judge(x: FloatArray, weak_correct: NDArray[np.bool_], l2: float = 0.01) -> Judge:
    """Penalised logistic regression (the scorer's own Newton fit) of the small tier failing."""
    mean = x.mean(axis=0)
    std = np.where(x.std(axis=0) > 1e-12, x.std(axis=0), 1.0)
    z = (x - mean) / std
    # ``fit`` works on the scorer's feature columns; give it the answer features in their place.
    from zeta_router.scoring.features import FEATURE_NAMES

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
    return Judge(model.coef[: z.shape[1]].copy(), model.bias, mean, std)


def cross_validated_doubt(
    x: FloatArray, weak_correct: NDArray[np.bool_], folds: NDArray[np.int64], l2: float = 0.01
) -> FloatArray:
    """Out-of-fold doubts: each fold judged by a judge fitted on the other folds."""
    out = np.zeros(x.shape[0])
    for f in np.unique(folds):
        test = folds == f
        out[test] = fit_judge(x[~test], weak_correct[~test], l2).doubt(x[test])
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
