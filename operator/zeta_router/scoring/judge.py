"""The answer-side judge: how likely the small tier's answer is wrong, without a model call.

Pure functions of a request's text and the small tier's answer, cheap (about 0.2 ms an answer):
the arithmetic the answer states (``a op b = c``, also inside ``<<...>>`` annotations)
re-evaluated, a missing, fractional or unmarked final number, a cut-off answer, hedging, and the
answer's length against the question's. ``Judge`` turns them into a probability with a
logistic model (``default_judge.json``, fitted by ``quality.cascade.fit_judge_weights`` on the
math dev set). A context in ``cascade`` mode escalates a non-streamed request to the largest
tier when that probability reaches its ``escalateAbove`` (see docs/routing-quality.md, "The small
tier's answer as a signal").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

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


#: Characters of an answer the judge reads (its tail: the final number is at the end); bounds
#: the cost for very long answers.
ANSWER_CHARS = 8000


def answer_features(question: str, answer: str) -> list[float]:
    """Features of the small tier's ``answer`` to ``question``, in ``ANSWER_FEATURES`` order."""
    text = answer.strip()[-ANSWER_CHARS:]
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


class JudgeWeights(BaseModel):
    """A logistic judge: P(wrong) = sigmoid(bias + sum(weights[f] * answer_feature[f]))."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    bias: float = 0.0
    weights: dict[str, float] = Field(default_factory=dict)
    source: str | None = None


class Judge:
    """A validated judge. Immutable; safe to share between tasks."""

    __slots__ = ("_bias", "_terms", "weights")

    def __init__(self, weights: JudgeWeights) -> None:
        unknown = sorted(set(weights.weights) - set(ANSWER_FEATURES))
        if unknown:
            raise ValueError(f"judge weights name unknown answer features: {', '.join(unknown)}")
        values = [weights.bias, *weights.weights.values()]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("judge weights must be finite numbers")
        self.weights = weights
        self._bias = weights.bias
        index = {n: i for i, n in enumerate(ANSWER_FEATURES)}
        self._terms = tuple((index[k], v) for k, v in weights.weights.items() if v != 0.0)

    def doubt_of(self, values: list[float]) -> float:
        z = self._bias
        for i, w in self._terms:
            z += w * values[i]
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def doubt(self, question: str, answer: str) -> float:
        """The probability that ``answer`` (the small tier's) to ``question`` is wrong."""
        return self.doubt_of(answer_features(question, answer))


def judge_weights_from(data: Mapping[str, object]) -> JudgeWeights:
    return JudgeWeights.model_validate(data)


@cache
def default_judge() -> Judge:
    """The judge shipped in the package (``default_judge.json``), built once."""
    text = resources.files("zeta_router.scoring").joinpath("default_judge.json").read_text()
    return Judge(judge_weights_from(json.loads(text)))
