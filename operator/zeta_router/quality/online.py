"""``zeta-router eval --online``: the learner replayed on a labelled data set as a stream.

The prompts are put in one shuffled order (fixed by a seed). Each prompt is scored by the model
in use at that point of the stream, i.e. learned only from the labels of the prompts before
it; then its label is learned. Every ``refit_every`` labels the operator's own refit step runs
(``learning.learner.refit``: fit on all but the most recent labels, judged on those, adopted
only if it beats the model in use), so the figures describe what the operator would do with
that traffic.

Reported:

- the streamed scores' APGR over the second half of the stream (each scored before its label
  was learned), beside the prior on the same prompts;
- the learning curve: the model in use after 250, 500, 1,000 and 2,000 labels, each judged on
  the second half of the stream (the same prompts for every point, never seen by any of them);
- the refits: how many, how many adopted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from zeta_router.quality import metrics
from zeta_router.quality.data import Dataset
from zeta_router.scoring import ngrams
from zeta_router.scoring.features import vector_and_text
from zeta_router.scoring.learned import CompiledCorrection
from zeta_router.scoring.learner import (
    Labelled,
    LearnerConfig,
    Refit,
    decisions,
    refit,
)
from zeta_router.scoring.scorer import Scorer

CHECKPOINTS: tuple[int, ...] = (250, 500, 1000, 2000)
DEFAULT_REFIT_EVERY = 100
#: Labels kept per context, by the operator and by default here.
DEFAULT_MAX_LABELS = 20_000

FloatArray = NDArray[np.float64]


def net_gain_labels(weak: NDArray[np.bool_], strong: NDArray[np.bool_]) -> FloatArray:
    """Labels of correctness pairs: 1 only the strong model right, 0 only the weak, 0.5 tie."""
    out: FloatArray = (1.0 + strong.astype(np.float64) - weak.astype(np.float64)) / 2.0
    return out


def featurise(prompts: Sequence[str], bits: int) -> tuple[FloatArray, list[NDArray[np.int64]]]:
    """Cheap features and hashed indices of each prompt, through the router's own path."""
    rows = []
    idx = []
    for p in prompts:
        x, text = vector_and_text({"messages": [{"role": "user", "content": p}]})
        rows.append(x)
        idx.append(ngrams.indices(text, bits))
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1), idx


@dataclass(frozen=True)
class Point:
    labels: int
    apgr: float
    prior_apgr: float
    adopted_refits: int


@dataclass
class OnlineResult:
    order: NDArray[np.int64]
    scores: FloatArray  # logits, in stream order
    prior_scores: FloatArray
    weak: NDArray[np.bool_]  # in stream order
    strong: NDArray[np.bool_]
    curve: list[Point]
    refits: list[Refit] = field(default_factory=list)
    refit_at: list[int] = field(default_factory=list)

    @property
    def half(self) -> int:
        return len(self.order) // 2

    def window_apgr(self, start: int, stop: int, prior: bool = False) -> float | None:
        s = (self.prior_scores if prior else self.scores)[start:stop]
        try:
            return metrics.curve(s, self.weak[start:stop], self.strong[start:stop]).apgr()
        except metrics.MetricError:
            return None

    @property
    def adopted(self) -> int:
        return sum(r.adopt for r in self.refits)


def replay(
    ds: Dataset,
    prior: Scorer,
    cfg: LearnerConfig,
    *,
    seed: int = 0,
    refit_every: int = DEFAULT_REFIT_EVERY,
    max_labels: int | None = None,
    shuffle_labels: bool = False,
    checkpoints: Sequence[int] = CHECKPOINTS,
) -> OnlineResult:
    """Replay ``ds`` as a stream (see the module docstring).

    ``max_labels``: the window of most recent labels a refit uses (the operator's bound).
    ``shuffle_labels``: give each prompt the labels of another (a control: nothing can be
    learned, so the APGR must stay at chance).
    """
    n = len(ds)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n).astype(np.int64)
    weak, strong = ds.weak[order], ds.strong[order]
    if shuffle_labels:
        perm = np.random.default_rng(seed + 1).permutation(n)
        weak, strong = weak[perm], strong[perm]
    x_all, idx_all = featurise([ds.prompts[int(i)] for i in order], cfg.bits)
    stream = Labelled(x_all, idx_all, net_gain_labels(weak, strong))
    prior_scores = prior.decision_matrix(x_all)
    scores = np.empty(n)
    current = CompiledCorrection.zero(cfg.bits)
    in_use: dict[int, tuple[CompiledCorrection, int]] = {}
    result = OnlineResult(order, scores, prior_scores, weak, strong, [])
    pending = sorted(k for k in checkpoints if k <= n)
    for start in range(0, n, refit_every):
        stop = min(n, start + refit_every)
        scores[start:stop] = decisions(prior, current, stream.slice(start, stop))
        before = (current, result.adopted)
        lo = 0 if max_labels is None else max(0, stop - max_labels)
        step = refit(stream.slice(lo, stop), prior, current, cfg)
        result.refits.append(step)
        result.refit_at.append(stop)
        if step.adopt and step.candidate is not None:
            current = step.candidate
        while pending and pending[0] <= stop:
            # The model in use once the first k labels have been learned: refits happen every
            # ``refit_every`` labels, so before this one unless k is where it happens.
            k = pending.pop(0)
            in_use[k] = (current, result.adopted) if k == stop else before
    half = n // 2
    test = stream.slice(half, n)
    for k in sorted(k for k in in_use if k > 0):
        if k > half:
            continue
        model, adopted = in_use[k]
        z = decisions(prior, model, test)
        result.curve.append(
            Point(
                labels=k,
                apgr=metrics.curve(z, weak[half:], strong[half:]).apgr(),
                prior_apgr=metrics.curve(prior_scores[half:], weak[half:], strong[half:]).apgr(),
                adopted_refits=adopted,
            )
        )
    return result
