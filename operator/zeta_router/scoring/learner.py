"""The learner: refit a context's correction from outcome labels and decide whether to adopt it.

One code path for the operator (on its schedule, from the labels the routers collect) and for
``zeta-router eval --online`` (replaying a labelled data set as a stream), so the offline
figures describe what the operator does.

A *label* in [0, 1] says how much a request needed a larger tier than the smaller one: 1 when
only the larger tier's answer was good, 0.5 when both did as well, 0 when only the smaller one's
was (see ``scoring.labels`` for how each source is turned into one). Its *gain*
``2 * label - 1`` is what sending the request to the larger tier earned; routing quality on
labels is the APGR over gains (``scoring.apgr.gain_apgr``).

:func:`refit` is one step of the schedule:

1. the most recent labels (``held_out_share`` of them, at least ``min_held_out``) are held out;
2. a candidate correction is fitted on the others: logistic regression with the prior's logit as
   an offset (the prior stays; only the correction is learned), the hashed uni/bigram weights
   and the standardised cheap-feature weights penalised (L2) towards no correction, i.e. towards
   the prior, by L-BFGS started from the correction in use (``shrink_to="current"`` centres the
   penalty on the correction in use instead: measured worse, see below);
3. the candidate is pruned and quantised to what the routing ConfigMap can carry (the largest
   weights within ``max_bytes``), since that is what routers would run;
4. both the model in use and the candidate score the held-out labels; the candidate is adopted
   only if its APGR beats the one in use by more than ``min_gain``.

numpy only, deterministic (no randomness at all).

Why the penalty is centred on no correction: every refit sees (nearly) all the labels the
previous one saw, so a penalty centred on the previous fit makes successive refits proximal
steps towards the *unpenalised* fit of the labels: the effective regularisation fades with every
adoption and the model overfits. Centred on zero, every refit is the same well-posed ridge fit of
the labels it has. On ``eval --online`` over our MMLU data (three stream orders) that raised the
second half's APGR from 0.632 / 0.621 / 0.641 to 0.639 / 0.643 / 0.638 and kept the model in
use at or above the prior at every point of the learning curve (centred on the model in use it
fell to 0.569 against the prior's 0.575 after 1,000 labels on one order); see
docs/routing-quality.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from zeta_router.scoring import ngrams
from zeta_router.scoring.apgr import UndefinedApgrError, gain_apgr
from zeta_router.scoring.features import FEATURE_NAMES
from zeta_router.scoring.learned import (
    MAX_BYTES_PER_CONTEXT,
    MAX_SOURCE_CHARS,
    CompiledCorrection,
    serialised_size,
)
from zeta_router.scoring.scorer import Scorer

FloatArray = NDArray[np.float64]
IndexArray = NDArray[np.int64]


#: Decisive held-out labels (one tier right, the other wrong; ties carry no evidence) below
#: which a candidate is not judged. APGR on fewer is mostly noise: on the math word problems
#: (about 30 % of labels decisive) the earlier bar of a quarter of the held-out labels let
#: candidates judged on some 25 decisive labels be adopted after 300-400 labels, and on one of
#: three stream orders the learner then routed the rest of the stream worse than its prior and
#: than prompt length (0.599 against 0.636 and 0.626; docs/routing-quality.md).
MIN_DECISIVE = 60.0

#: What ``LearnerConfig.shrink_to`` may name (the first is the default).
SHRINK_TO: tuple[Literal["zero", "current"], ...] = ("zero", "current")


class LearnError(ValueError):
    """The labels cannot be learned from (the message says why)."""


@dataclass(frozen=True)
class LearnerConfig:
    """How to refit (see the module docstring)."""

    bits: int = ngrams.DEFAULT_BITS
    l2: float = 3.0
    """Penalty on the hashed weights (per label summed), towards ``shrink_to``."""
    l2_features: float = 100.0
    """Penalty on the standardised cheap-feature weights (they mostly add noise on top of the
    prior, so they move only with strong evidence)."""
    min_labels: int = 200
    """Labels a context needs before it is refitted at all."""
    held_out_share: float = 0.2
    min_held_out: int = 50
    min_gain: float = 0.0
    """The candidate's held-out APGR must exceed the model in use's by more than this."""
    confidence: float = 0.8
    """And it must do so in at least this share of paired bootstrap resamples of the held-out
    labels (0: the plain comparison). Few held-out labels make APGR noisy; this keeps a
    candidate that won by luck from replacing the model in use."""
    resamples: int = 200
    min_evidence: float = 25.0
    """The held-out labels must carry at least this much evidence: the sum of their gains'
    sizes (a tie carries none). Until they do, nothing is judged, so nothing is adopted."""
    max_bytes: int = MAX_BYTES_PER_CONTEXT
    shrink_to: Literal["zero", "current"] = "zero"
    """What the penalties pull the weights towards: ``zero`` (no correction: the prior; each
    refit a ridge fit of its labels) or ``current`` (the correction in use: successive refits
    drift towards the unpenalised fit, see the module docstring)."""
    max_iter: int = 100
    tol: float = 1e-5

    def __post_init__(self) -> None:
        ngrams.check_bits(self.bits)
        for name in ("l2", "l2_features"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise LearnError(f"{name} must be a number > 0, got {value}")
        if self.shrink_to not in SHRINK_TO:
            raise LearnError(
                f"shrink_to must be one of {', '.join(SHRINK_TO)}, got {self.shrink_to!r}"
            )
        if not 0.0 < self.held_out_share < 1.0:
            raise LearnError(f"held_out_share must be in (0, 1), got {self.held_out_share}")
        if self.min_held_out < 10:
            raise LearnError(f"min_held_out must be at least 10, got {self.min_held_out}")
        if self.min_labels < self.min_held_out + 10:
            raise LearnError(
                f"min_labels ({self.min_labels}) must leave at least 10 labels to fit beside "
                f"the {self.min_held_out} held out"
            )
        if not 0.0 <= self.confidence < 1.0:
            raise LearnError(f"confidence must be in [0, 1), got {self.confidence}")
        if self.max_bytes < 1024:
            raise LearnError(f"max_bytes must be at least 1024, got {self.max_bytes}")

    @classmethod
    def for_labels(cls, min_labels: int, **settings: Any) -> LearnerConfig:
        """The configuration for refits from ``min_labels`` labels on: at least 50 labels held
        out, fewer (down to 20) when ``min_labels`` is small, and as much evidence as
        ``MIN_DECISIVE`` decisive labels in them, less (down to a quarter of the held-out
        labels) when ``min_labels`` is small (the operator's ``spec.learning`` and
        ``eval --online`` both use it)."""
        held = max(20, min(50, min_labels // 3))
        evidence = max(held / 4, min(MIN_DECISIVE, 0.3 * min_labels))
        return cls(min_labels=min_labels, min_held_out=held, min_evidence=evidence, **settings)

    def held_out(self, n: int) -> int:
        return max(self.min_held_out, math.ceil(self.held_out_share * n))


@dataclass(frozen=True)
class Labelled:
    """Labelled requests, oldest first: their cheap features, hashed indices and labels."""

    x: FloatArray  # (n, len(FEATURE_NAMES))
    indices: Sequence[IndexArray]
    y: FloatArray  # labels in [0, 1]

    def __post_init__(self) -> None:
        n = self.y.shape[0]
        if self.x.shape != (n, len(FEATURE_NAMES)) or len(self.indices) != n:
            raise LearnError(
                f"features {self.x.shape}, indices {len(self.indices)} and labels {n} disagree"
            )
        if n and not (np.all(self.y >= 0.0) and np.all(self.y <= 1.0)):
            raise LearnError("labels must be in [0, 1]")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def slice(self, start: int, stop: int) -> Labelled:
        return Labelled(self.x[start:stop], self.indices[start:stop], self.y[start:stop])

    @property
    def gains(self) -> FloatArray:
        out: FloatArray = 2.0 * self.y - 1.0
        return out


def decisions(prior: Scorer, correction: CompiledCorrection, data: Labelled) -> FloatArray:
    """The logits the router would compute for each labelled request."""
    z = prior.decision_matrix(data.x) + correction.bias + data.x @ correction.coef
    if correction.keys.size:
        z += np.fromiter(
            (correction.ngram_sum(i) for i in data.indices), dtype=np.float64, count=len(data)
        )
    return z


def apgr(prior: Scorer, correction: CompiledCorrection, data: Labelled) -> float | None:
    """APGR of prior + correction on labelled requests (None: undefined on these labels)."""
    try:
        return gain_apgr(decisions(prior, correction, data), data.gains)
    except UndefinedApgrError:
        return None


@dataclass(frozen=True)
class _Csr:
    cols: IndexArray
    vals: FloatArray  # 1/sqrt(len) per entry
    starts: IndexArray
    lens: IndexArray


def _csr(indices: Sequence[IndexArray]) -> _Csr:
    lens = np.fromiter((i.size for i in indices), dtype=np.int64, count=len(indices))
    cols = np.concatenate(list(indices)) if len(indices) else np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
    scale = 1.0 / np.sqrt(np.maximum(lens, 1))
    return _Csr(cols.astype(np.int64), np.repeat(scale, lens), starts, lens)


def _row_sums(values: FloatArray, m: _Csr) -> FloatArray:
    out = np.zeros(m.lens.size)
    nz = m.lens > 0
    if m.cols.size:
        sums = np.add.reduceat(values[m.cols] * m.vals, m.starts[nz])
        out[nz] = sums
    return out


def fit(
    data: Labelled,
    prior: Scorer,
    anchor: CompiledCorrection,
    cfg: LearnerConfig,
) -> CompiledCorrection:
    """Fit a correction on ``data`` (all of it), started from ``anchor`` (unpruned, the
    correction in use) and penalised towards zero or ``anchor`` (``cfg.shrink_to``)."""
    n = len(data)
    if n == 0:
        raise LearnError("no labels to fit")
    if anchor.bits != cfg.bits:
        anchor = CompiledCorrection.zero(cfg.bits)
    size = 1 << cfg.bits
    m = _csr(data.indices)
    if m.cols.size and (m.cols.min() < 0 or m.cols.max() >= size):
        raise LearnError(f"hashed indices outside [0, 2**{cfg.bits})")
    # Only indices seen in these labels or weighted by the anchor can move or cost anything:
    # fit in that space (a fraction of 2**bits).
    space, inverse = np.unique(np.concatenate((m.cols, anchor.keys)), return_inverse=True)
    m = _Csr(inverse[: m.cols.size].astype(np.int64), m.vals, m.starts, m.lens)
    k = int(space.size)
    offset = prior.decision_matrix(data.x)
    y = data.y
    mu = data.x.mean(axis=0)
    sd = data.x.std(axis=0)
    varying = sd > 1e-9
    nv = int(varying.sum())
    xs = (data.x[:, varying] - mu[varying]) / sd[varying]
    # A feature that does not vary in these labels keeps the anchor's weight (it cannot be
    # fitted); its contribution is a constant, carried by the bias while fitting.
    fixed = anchor.coef.copy()
    fixed[varying] = 0.0
    offset = offset + data.x @ fixed

    w0 = np.zeros(k)
    if anchor.keys.size:
        w0[inverse[m.cols.size :]] = anchor.values
    v0 = anchor.coef[varying] * sd[varying]
    b0 = anchor.bias + float(np.dot(anchor.coef[varying], mu[varying]))
    theta0 = np.concatenate((w0, v0, [b0]))
    reg = np.concatenate((np.full(k, cfg.l2), np.full(nv, cfg.l2_features), [0.0]))
    # The bias is free either way; with ``zero`` the weights shrink towards no correction.
    centre = theta0.copy()
    if cfg.shrink_to == "zero":
        centre[:-1] = 0.0

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        w, v, b = theta[:k], theta[k : k + nv], theta[-1]
        z = offset + b + xs @ v + _row_sums(w, m)
        r = 0.5 * (1.0 + np.tanh(0.5 * z)) - y
        d = theta - centre
        loss = float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(reg * d * d))
        gw = (
            np.bincount(m.cols, weights=np.repeat(r, m.lens) * m.vals, minlength=k)
            if m.cols.size
            else np.zeros(k)
        )
        grad = np.concatenate((gw, xs.T @ r, [r.sum()])) + reg * d
        return loss, grad

    theta = _lbfgs(objective, theta0.copy(), cfg.max_iter, cfg.tol)
    w, v, b = theta[:k], theta[k : k + nv], float(theta[-1])
    coef = fixed.copy()
    coef[varying] = v / sd[varying]
    bias = b - float(np.dot(coef[varying], mu[varying]))
    nz = np.nonzero(w)[0]
    return CompiledCorrection(
        bits=cfg.bits,
        bias=bias,
        coef=coef,
        keys=space[nz].astype(np.int64),
        values=w[nz],
        labels=n,
    )


def _lbfgs(f: object, x: FloatArray, max_iter: int, tol: float, memory: int = 6) -> FloatArray:
    """Minimise a smooth convex function (L-BFGS, backtracking Armijo line search)."""
    assert callable(f)
    fx, g = f(x)
    s_hist: list[FloatArray] = []
    y_hist: list[FloatArray] = []
    for _ in range(max_iter):
        q = g.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist), strict=True):
            rho = 1.0 / float(np.dot(yv, s))
            a = rho * float(np.dot(s, q))
            q -= a * yv
            alphas.append((rho, a, s, yv))
        if s_hist:
            q *= float(np.dot(s_hist[-1], y_hist[-1])) / float(np.dot(y_hist[-1], y_hist[-1]))
        else:
            q /= max(1.0, float(np.linalg.norm(g)))
        for rho, a, s, yv in reversed(alphas):
            q += s * (a - rho * float(np.dot(yv, q)))
        d = -q
        slope = float(np.dot(g, d))
        if slope >= 0.0:
            d, slope = -g, -float(np.dot(g, g))
        if slope == 0.0:
            break
        step = 1.0
        while True:
            xn = x + step * d
            fn, gn = f(xn)
            if fn <= fx + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, yv = xn - x, gn - g
        if float(np.dot(s, yv)) > 1e-12:
            s_hist.append(s)
            y_hist.append(yv)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        done = abs(fx - fn) <= tol * max(1.0, abs(fx))
        x, fx, g = xn, fn, gn
        if done:
            break
    return x


def prune(correction: CompiledCorrection, max_bytes: int) -> CompiledCorrection:
    """The correction as routers would run it: quantised, and only its largest hashed weights,
    as many as fit in ``max_bytes`` of serialised model (its ``source`` text included, up to
    ``MAX_SOURCE_CHARS``)."""
    room = max_bytes - MAX_SOURCE_CHARS - 16
    keys, values = correction.keys, correction.values
    keep = values != 0.0
    keys, values = keys[keep], values[keep]
    order = np.argsort(-np.abs(values), kind="stable")
    # About 2.5 bytes per weight once coded; start there and shrink until it fits.
    count = min(keys.size, max(1, int(room / 2.5)))
    while True:
        top = np.sort(order[:count])
        candidate = CompiledCorrection(
            bits=correction.bits,
            bias=correction.bias,
            coef=correction.coef,
            keys=keys[top],
            values=values[top],
            labels=correction.labels,
            source=correction.source,
        )
        model = candidate.to_model(source="")
        size = serialised_size(model)
        if size <= room or count <= 1:
            # Back from the serialised form, so the weights are exactly what routers decode.
            return CompiledCorrection.from_model(model)
        count = int(count * 0.9)


@dataclass(frozen=True)
class Refit:
    """One step of the schedule: the candidate, the held-out figures and the verdict."""

    adopt: bool
    reason: str
    candidate: CompiledCorrection | None = None
    apgr_before: float | None = None
    apgr_after: float | None = None
    labels: int = 0
    held_out: int = 0
    trained_on: int = 0


def refit(data: Labelled, prior: Scorer, current: CompiledCorrection, cfg: LearnerConfig) -> Refit:
    """Fit a candidate on all but the most recent labels and judge it on those (see the
    module docstring). ``current`` is the correction in use (``CompiledCorrection.zero()``:
    the prior alone)."""
    n = len(data)
    if n < cfg.min_labels:
        return Refit(False, f"{n} labels, fewer than the {cfg.min_labels} needed", labels=n)
    held = cfg.held_out(n)
    train, test = data.slice(0, n - held), data.slice(n - held, n)
    evidence = float(np.abs(test.gains).sum())
    if evidence < cfg.min_evidence:
        return Refit(
            False,
            f"too little evidence to judge a model: {evidence:.0f} of the "
            f"{cfg.min_evidence:.0f} needed, most are ties ({held} most recent of {n} labels)",
            labels=n,
            held_out=held,
            trained_on=n - held,
        )
    before = apgr(prior, current, test)
    if before is None:
        return Refit(
            False,
            "the larger tier does no better on the held-out labels, so no model can be "
            f"judged on them ({held} most recent of {n} labels)",
            labels=n,
            held_out=held,
            trained_on=n - held,
        )
    candidate = prune(fit(train, prior, current, cfg), cfg.max_bytes)
    after = apgr(prior, candidate, test)
    assert after is not None  # same gains as ``before``
    wins = None
    adopt = after > before + cfg.min_gain
    if adopt and cfg.confidence > 0.0:
        wins = _bootstrap_wins(
            decisions(prior, current, test), decisions(prior, candidate, test), test, cfg
        )
        adopt = wins >= cfg.confidence
    verdict = "beats" if adopt else "does not beat"
    margin = f" by more than {cfg.min_gain:g}" if cfg.min_gain and not adopt else ""
    sure = "" if wins is None else f", in {100 * wins:.0f}% of resamples"
    return Refit(
        adopt=adopt,
        reason=f"held-out APGR {after:.3f} {verdict} {before:.3f} of the model in use{margin}"
        f"{sure} ({held} most recent of {n} labels)",
        candidate=candidate,
        apgr_before=before,
        apgr_after=after,
        labels=n,
        held_out=held,
        trained_on=n - held,
    )


def _bootstrap_wins(
    before: FloatArray, after: FloatArray, test: Labelled, cfg: LearnerConfig
) -> float:
    """Share of paired resamples of the held-out labels on which ``after`` beats ``before``
    by more than ``min_gain`` (deterministic: the resamples depend only on their size)."""
    rng = np.random.default_rng(len(test))
    gains = test.gains
    wins = 0
    for _ in range(cfg.resamples):
        pick = rng.integers(0, len(test), len(test))
        try:
            a = gain_apgr(after[pick], gains[pick])
            b = gain_apgr(before[pick], gains[pick])
        except UndefinedApgrError:
            continue  # a resample with no gain at all counts as no win
        wins += a > b + cfg.min_gain
    return wins / cfg.resamples


def keep_share(
    prior: Scorer,
    in_use: CompiledCorrection,
    candidate: CompiledCorrection,
    data: Labelled,
    cut: float,
) -> CompiledCorrection:
    """``candidate`` with its bias moved so that, on ``data``'s requests, as many score at or
    above ``cut`` as with the model in use: adopting it changes *which* requests go past the
    cut point, not *how many* (that stays the thresholds' job, and the control loop's). The
    order of the scores, hence the APGR, is unchanged."""
    n = len(data)
    if n == 0 or not 0.0 < cut < 1.0:
        return candidate
    tau = math.log(cut / (1.0 - cut))
    share = float(np.mean(decisions(prior, in_use, data) >= tau))
    share = min(max(share, 0.5 / n), 1.0 - 0.5 / n)
    z = decisions(prior, candidate, data)
    # The level that as many candidate scores reach: halfway between two neighbours.
    ordered = np.sort(z)[::-1]
    k = max(1, min(n - 1, round(share * n)))
    level = (ordered[k - 1] + ordered[k]) / 2.0
    return CompiledCorrection(
        bits=candidate.bits,
        bias=candidate.bias + (tau - float(level)),
        coef=candidate.coef,
        keys=candidate.keys,
        values=candidate.values,
        labels=candidate.labels,
        source=candidate.source,
    )
