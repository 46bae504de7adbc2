"""Outcome labels from each source, as numbers in [0, 1] on the scale of the learner.

A label is ``(1 + gain) / 2`` where the *gain* in [-1, 1] is how much better the larger tier's
answer is than the smaller tier's: 1 when only the larger one's is good, 0 when they are as good
(or as bad), -1 when only the smaller one's is good. So 1 means the request needed the larger
tier, 0.5 that it did not, 0 that the larger tier did worse; two models' correctness gives
exactly the ``net_gain`` target of ``zeta-router fit``.

- **Client scores** (``POST /v1/feedback``, a quality score in [0, 1] of the answer the client
  got): for an answer of a tier below the largest, gain ``1 - score`` (a poor answer from a
  smaller tier says the request needed more; a perfect one, that it did not). A score of the
  largest tier's answer says nothing about whether a smaller tier would have done, so it is no
  label.
- **Shadow pairs judged by agreement**: gain ``1 - agreement`` (token overlap of the two
  answers, ``router.shadow.agreement``): answers that differ suggest the smaller tier fell short.
- **Shadow pairs judged by the largest tier**: it is asked whether the smaller tier's answer is
  as good as its own (``api.learning.DEFAULT_JUDGE_PROMPT``): YES is gain 0, NO gain 1,
  anything else no label.
- **A labelled file** (cold start): a ``label`` column holding the gain (1: needed the larger
  tier, 0: the smaller one did as well, down to -1: the smaller one did better), or the
  correctness of a weak and a strong model as ``zeta-router fit`` reads (gain
  ``strong - weak``).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from typing import Any, Final

SOURCES: Final = ("feedback", "agreement", "judge", "file", "cascade")
#: Longest request and answer text put in a judge prompt (head kept): bounds the judge's cost.
JUDGE_TEXT_CHARS: Final = 6000
_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})
_FIRST_WORD = re.compile(r"[A-Za-z]+")


class LabelFileError(ValueError):
    """A labelled file that cannot be used; the message says where and why."""


def feedback_label(score: float, served: int, top: int) -> float | None:
    """The label of a client's score of an answer from tier ``served`` (0 = smallest) of a
    ladder whose largest tier is ``top``; None when it says nothing about a smaller tier."""
    if not (0.0 <= score <= 1.0) or math.isnan(score):
        raise ValueError(f"a feedback score must be in [0, 1], got {score}")
    if served >= top:
        return None
    return from_gain(1.0 - float(score))


def from_gain(gain: float) -> float:
    """The label of a gain in [-1, 1] (clipped there)."""
    return (1.0 + min(1.0, max(-1.0, float(gain)))) / 2.0


def agreement_label(agreement: float) -> float:
    """The label of a shadow pair whose answers agree ``agreement`` in [0, 1]."""
    return from_gain(1.0 - min(1.0, max(0.0, float(agreement))))


def judge_messages(
    template: str, request: str, reference: str, candidate: str
) -> list[dict[str, str]]:
    """The chat messages asking the largest tier to judge ``candidate`` (the smaller tier's
    answer) against ``reference`` (its own). Placeholders are replaced literally, so braces in
    the texts are harmless."""

    def clip(text: str) -> str:
        return text if len(text) <= JUDGE_TEXT_CHARS else text[:JUDGE_TEXT_CHARS] + " [...]"

    content = (
        template.replace("{request}", clip(request))
        .replace("{reference}", clip(reference))
        .replace("{candidate}", clip(candidate))
    )
    return [{"role": "user", "content": content}]


def parse_verdict(text: str) -> bool | None:
    """The judge's answer: True for YES (as good), False for NO, None when it is neither."""
    m = _FIRST_WORD.search(text)
    if m is None:
        return None
    word = m.group(0).upper()
    if word == "YES":
        return True
    if word == "NO":
        return False
    return None


def judge_label(as_good: bool) -> float:
    return from_gain(0.0 if as_good else 1.0)


def cascade_label(doubt: float) -> float:
    """A cascade's judged request: the larger tier's expected gain is the judge's probability
    that the smallest tier's answer is wrong (taking the larger tier's as right)."""
    return from_gain(min(max(doubt, 0.0), 1.0))


@dataclass(frozen=True)
class FileRow:
    prompt: str
    label: float
    context: str | None
    line: int


def read_label_file(text: str, *, name: str = "labels") -> list[FileRow]:
    """Rows of a labelled CSV (see the module docstring); raises :class:`LabelFileError`."""
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    if "prompt" not in header:
        raise LabelFileError(f"{name}: no 'prompt' column (columns: {', '.join(header)})")
    rows: list[dict[str, Any]] = list(reader)
    if not rows:
        raise LabelFileError(f"{name}: no rows")
    has_context = "context" in header
    if "label" in header:
        out = []
        for i, r in enumerate(rows):
            try:
                value = float(r.get("label") or "")
            except ValueError:
                raise LabelFileError(
                    f"{name}: line {i + 2}: label {r.get('label')!r} is not a number"
                ) from None
            if not -1.0 <= value <= 1.0:
                raise LabelFileError(f"{name}: line {i + 2}: label {value} is not in [-1, 1]")
            out.append(_row(r, from_gain(value), has_context, i))
        return out
    models = [c for c in header if c not in ("prompt", "context")]
    if len(models) != 2:
        raise LabelFileError(
            f"{name}: expected a 'label' column or exactly two True/False model columns besides "
            f"'prompt', found {models}"
        )
    values: dict[str, list[bool]] = {m: [] for m in models}
    for i, r in enumerate(rows):
        for m in models:
            v = str(r.get(m) or "").strip().lower()
            if v not in _TRUE and v not in _FALSE:
                raise LabelFileError(
                    f"{name}: line {i + 2}, column {m!r}: expected True/False, got {r.get(m)!r}"
                )
            values[m].append(v in _TRUE)
    weak, strong = sorted(models, key=lambda m: (sum(values[m]), models.index(m)))
    return [
        _row(r, from_gain(values[strong][i] - values[weak][i]), has_context, i)
        for i, r in enumerate(rows)
    ]


def _row(r: dict[str, Any], value: float, has_context: bool, i: int) -> FileRow:
    ctx = (r.get("context") or "").strip() if has_context else ""
    return FileRow(prompt=str(r.get("prompt") or ""), label=value, context=ctx or None, line=i + 2)
