"""APGR from gains: how well a score orders requests between a smaller and a larger tier.

The top share ``x`` of requests by score goes to the larger tier. ``gains[i]`` in [-1, 1] is how
much better the larger tier's answer to request ``i`` is than the smaller tier's; PGR at ``x``
is the gain of the top ``x`` over the total gain, APGR the area under PGR over ``x`` in [0, 1]
(a random order scores 0.5). Ties in the score count as a random order among the tied requests
(the curve is linear across a tie), so the figure is exact and deterministic.

The scoring core's own copy of the measure, for the learner's adoption check;
``quality.metrics`` builds the full PGR curve of two models' correctness on the same function.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]


class UndefinedApgrError(ValueError):
    """APGR is undefined on these requests (no requests, or the larger tier does no better)."""


def cumulative_gain(s: FloatArray, delta: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Share of requests taken (highest scores first) and the gain summed over them, at each
    boundary between groups of equal scores (and at 0 and 1)."""
    n = s.shape[0]
    # Descending by score; the order inside a tie is irrelevant since only group ends are kept.
    order = np.argsort(-s, kind="stable")
    sorted_scores = s[order]
    gains = np.concatenate(([0.0], np.cumsum(delta[order])))
    # Group ends: positions k (requests taken) where the next score differs, plus 0 and n.
    ends = np.nonzero(sorted_scores[1:] != sorted_scores[:-1])[0] + 1
    ks = np.concatenate(([0], ends, [n]))
    return (ks / n).astype(np.float64), gains[ks].astype(np.float64)


def gain_apgr(scores: ArrayLike, gains: ArrayLike) -> float:
    """APGR of ``scores`` given each request's gain (``strong - weak`` for two models'
    correctness, ``2 * label - 1`` for a label in [0, 1] saying the request needed the larger
    tier). Raises :class:`UndefinedApgrError` when the total gain is not positive."""
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(gains, dtype=np.float64)
    if s.ndim != 1 or g.shape != s.shape:
        raise UndefinedApgrError(
            f"scores and gains must have the same length ({s.shape}, {g.shape})"
        )
    if s.size == 0:
        raise UndefinedApgrError("no requests to evaluate")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(g))):
        raise UndefinedApgrError("scores and gains must be finite numbers")
    total = float(g.sum())
    if total <= 1e-12:
        raise UndefinedApgrError(
            "the larger tier does no better than the smaller one on these requests (total "
            f"gain {total:.3g}); PGR is undefined"
        )
    x, cum = cumulative_gain(s, g)
    pgr = cum / total
    return float(np.sum((x[1:] - x[:-1]) * (pgr[1:] + pgr[:-1]) / 2.0))
