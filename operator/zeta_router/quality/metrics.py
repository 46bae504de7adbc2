"""Routing-quality metrics: PGR curve, APGR, CPT, accuracy at a strong-call share.

A router score orders the prompts; the top fraction ``x`` by score goes to the strong (large)
model, the rest to the weak (small) one. With per-prompt correctness of both models:

- ``perf(x)``: accuracy of that mixed answer set;
- ``PGR(x) = (perf(x) - weak) / (strong - weak)`` (performance gap recovered);
- ``APGR``: the area under ``PGR`` over ``x`` in [0, 1];
- ``CPT(p)``: the smallest strong-call share ``x`` at which ``PGR(x) >= p``.

Ties in the score are treated as a random order among the tied prompts, i.e. by their expected
value: the curve is exact at the boundaries of each group of equal scores and linear inside it.
That makes a constant scorer score exactly like the expected random router (APGR 0.5,
CPT(p) = p), and it makes every figure deterministic. PGR is not clipped: an oracle that sends
only the prompts the strong model alone gets right goes above 1 for intermediate shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from zeta_router.scoring.apgr import cumulative_gain

DEFAULT_CPT_LEVELS: tuple[float, ...] = (0.5, 0.8)
DEFAULT_SHARES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)

FloatArray = NDArray[np.float64]


class MetricError(ValueError):
    """The inputs do not allow the metric (e.g. both models equally accurate)."""


@dataclass(frozen=True)
class Curve:
    """The PGR curve as a polyline: strong-call share ``x`` -> accuracy ``perf``.

    ``x`` runs from 0 to 1 with one point per boundary between groups of equal scores.
    """

    x: FloatArray
    perf: FloatArray
    weak: float
    strong: float

    @property
    def pgr(self) -> FloatArray:
        gap = self.strong - self.weak
        return (self.perf - self.weak) / gap

    def apgr(self) -> float:
        """Area under the PGR curve over [0, 1] (exact for the polyline)."""
        pgr = self.pgr
        return float(np.sum((self.x[1:] - self.x[:-1]) * (pgr[1:] + pgr[:-1]) / 2.0))

    def cpt(self, level: float) -> float:
        """Smallest strong-call share at which PGR reaches ``level`` (1.0 if it never does)."""
        pgr = self.pgr
        if pgr[0] >= level:
            return 0.0
        above = np.nonzero(pgr >= level)[0]
        if above.size == 0:
            return 1.0
        i = int(above[0])
        x0, x1, p0, p1 = self.x[i - 1], self.x[i], pgr[i - 1], pgr[i]
        return float(x0 + (x1 - x0) * (level - p0) / (p1 - p0))

    def perf_at(self, share: float) -> float:
        """Accuracy when the top ``share`` of prompts goes strong."""
        if not 0.0 <= share <= 1.0:
            raise MetricError(f"share must be in [0, 1], got {share}")
        return float(np.interp(share, self.x, self.perf))

    def pgr_at(self, share: float) -> float:
        return (self.perf_at(share) - self.weak) / (self.strong - self.weak)


def _as_bool(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise MetricError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.all(np.isin(arr, (0, 1))):
            raise MetricError(f"{name} must hold only 0/1 or booleans")
        arr = arr.astype(np.bool_)
    return arr


def _raw_curve(
    s: FloatArray, w: NDArray[np.bool_], t: NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray]:
    n = s.shape[0]
    x, gains = cumulative_gain(s, t.astype(np.float64) - w.astype(np.float64))
    perf = ((int(w.sum()) + gains) / n).astype(np.float64)
    return x, perf


def _inputs(
    scores: ArrayLike, weak: ArrayLike, strong: ArrayLike
) -> tuple[FloatArray, NDArray[np.bool_], NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64)
    w = _as_bool(weak, "weak")
    t = _as_bool(strong, "strong")
    n = s.shape[0]
    if s.ndim != 1 or w.shape[0] != n or t.shape[0] != n:
        raise MetricError(
            f"scores, weak and strong must have the same length ({s.shape}, {w.shape}, {t.shape})"
        )
    if n == 0:
        raise MetricError("no prompts to evaluate")
    if not np.all(np.isfinite(s)):
        raise MetricError("scores must be finite numbers")
    if w.mean() == t.mean():
        raise MetricError(
            "the strong and weak models are equally accurate on these prompts; PGR is undefined"
        )
    return s, w, t


def curve(scores: ArrayLike, weak: ArrayLike, strong: ArrayLike) -> Curve:
    """The PGR curve of a scorer: higher score = more deserving of the strong model."""
    s, w, t = _inputs(scores, weak, strong)
    x, perf = _raw_curve(s, w, t)
    return Curve(x=x, perf=perf, weak=float(w.mean()), strong=float(t.mean()))


def stratified_curve(
    scores: ArrayLike, weak: ArrayLike, strong: ArrayLike, strata: ArrayLike
) -> Curve:
    """The curve when each stratum routes its own top share ``x`` to the strong model.

    This is how cross-validated scores are judged: each fold's scores come from a different
    model, and pooling them would rank one model's scores against another's (an artefact
    that mostly punishes the held-out folds whose labels differ from the training average).
    Within a stratum one model orders the prompts, as it would in service. The accuracy at
    share ``x`` is the prompt-weighted mean over strata, so the weak/strong accuracies are
    those of the whole data, and the APGR is the mean of the strata's APGR weighted by
    prompts times gap.
    """
    s, w, t = _inputs(scores, weak, strong)
    g = np.asarray(strata)
    if g.shape != s.shape:
        raise MetricError(f"strata must have one entry per score ({g.shape} vs {s.shape})")
    n = s.shape[0]
    parts: list[tuple[int, FloatArray, FloatArray]] = []
    for value in np.unique(g):
        m = g == value
        xs, perf = _raw_curve(s[m], w[m], t[m])
        parts.append((int(m.sum()), xs, perf))
    grid = np.unique(np.concatenate([p[1] for p in parts]))
    perf_all = np.zeros_like(grid)
    for size, xs, perf in parts:
        perf_all += size * np.interp(grid, xs, perf)
    perf_all /= n
    return Curve(x=grid, perf=perf_all, weak=float(w.mean()), strong=float(t.mean()))


@dataclass(frozen=True)
class Summary:
    """The standard figures of one scorer on one data set."""

    name: str
    n: int
    weak: float
    strong: float
    apgr: float
    cpt: dict[float, float]
    accuracy_at: dict[float, float]
    pgr_at: dict[float, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "prompts": self.n,
            "weak_accuracy": self.weak,
            "strong_accuracy": self.strong,
            "apgr": self.apgr,
            "cpt": {f"{lvl:g}": v for lvl, v in self.cpt.items()},
            "accuracy_at_strong_share": {f"{s:g}": v for s, v in self.accuracy_at.items()},
            "pgr_at_strong_share": {f"{s:g}": v for s, v in self.pgr_at.items()},
        }


def summarise(
    name: str,
    c: Curve,
    n: int,
    cpt_levels: Sequence[float] = DEFAULT_CPT_LEVELS,
    shares: Sequence[float] = DEFAULT_SHARES,
) -> Summary:
    return Summary(
        name=name,
        n=n,
        weak=c.weak,
        strong=c.strong,
        apgr=c.apgr(),
        cpt={lvl: c.cpt(lvl) for lvl in cpt_levels},
        accuracy_at={s: c.perf_at(s) for s in shares},
        pgr_at={s: c.pgr_at(s) for s in shares},
    )


def evaluate(
    name: str,
    scores: ArrayLike,
    weak: ArrayLike,
    strong: ArrayLike,
    cpt_levels: Sequence[float] = DEFAULT_CPT_LEVELS,
    shares: Sequence[float] = DEFAULT_SHARES,
) -> Summary:
    s = np.asarray(scores, dtype=np.float64)
    return summarise(name, curve(s, weak, strong), s.shape[0], cpt_levels, shares)


def random_scores(n: int) -> FloatArray:
    """Scores of the expected random router: all tied (see the module docstring)."""
    return np.zeros(n, dtype=np.float64)


def oracle_scores(weak: ArrayLike, strong: ArrayLike) -> FloatArray:
    """Scores of the oracle: first the prompts only the strong model gets right, last those only
    the weak one gets right."""
    w = _as_bool(weak, "weak")
    t = _as_bool(strong, "strong")
    return t.astype(np.float64) - w.astype(np.float64)


def baselines(
    weak: ArrayLike,
    strong: ArrayLike,
    cpt_levels: Sequence[float] = DEFAULT_CPT_LEVELS,
    shares: Sequence[float] = DEFAULT_SHARES,
) -> tuple[Summary, Summary]:
    """The random router and the oracle on the same prompts."""
    w = _as_bool(weak, "weak")
    rnd = evaluate("random", random_scores(w.shape[0]), w, strong, cpt_levels, shares)
    orc = evaluate("oracle", oracle_scores(w, strong), w, strong, cpt_levels, shares)
    return rnd, orc


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """The pointwise mean of curves over the same prompts (e.g. repeats of cross-validation):
    its APGR is the mean of their APGRs."""
    if not curves:
        raise MetricError("no curves to average")
    grid = np.unique(np.concatenate([c.x for c in curves]))
    perf = np.mean([np.interp(grid, c.x, c.perf) for c in curves], axis=0)
    return Curve(x=grid, perf=perf, weak=curves[0].weak, strong=curves[0].strong)
