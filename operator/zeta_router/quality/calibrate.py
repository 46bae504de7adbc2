"""Thresholds that send a chosen share of traffic to the larger tiers.

The router sends a score to tier ``k`` = the number of cut points ``<=`` the score (see
``zeta_router.scoring.selector``). For a share ``x`` the cut point is put halfway between the
``round(x * n)``-th highest score and the next one, so the split is exact whichever side a
score equal to the cut point falls on, unless scores tie there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import yaml
from numpy.typing import ArrayLike, NDArray

from zeta_router.api.routing import ScorerWeights


class CalibrationError(ValueError):
    """The requested shares cannot be met on these scores."""


@dataclass(frozen=True)
class Calibration:
    thresholds: list[float]
    requested: list[float]
    achieved: list[float]
    prompts: int


def thresholds_for_shares(scores: ArrayLike, shares: Sequence[float]) -> Calibration:
    """One cut point per share; ``shares[i]`` is the fraction that should reach tier ``i + 1``
    or larger, so shares must be strictly decreasing (cut points then increase)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n = int(s.shape[0])
    if n == 0:
        raise CalibrationError("no prompts to calibrate on")
    if not shares:
        raise CalibrationError("give at least one share")
    for x in shares:
        if not 0.0 <= x <= 1.0:
            raise CalibrationError(f"a share must be in [0, 1], got {x}")
    if any(b >= a for a, b in pairwise(shares)):
        raise CalibrationError(
            f"shares {list(shares)} must be strictly decreasing: each tier boundary up the "
            "ladder sends less traffic above it"
        )
    cuts: list[float] = []
    for x in shares:
        k = round(x * n)
        if k <= 0:
            cut = min(1.0, float(np.nextafter(s[0], np.inf)))
        elif k >= n:
            cut = float(s[-1])
        else:
            cut = float((s[k - 1] + s[k]) / 2.0)
        cuts.append(round(cut, 6) if _rounding_keeps(cut, s) else cut)
    if any(b <= a for a, b in pairwise(cuts)):
        raise CalibrationError(
            f"scores tie too much to separate shares {list(shares)} (cut points {cuts}); "
            "use more data or shares further apart"
        )
    achieved = [float(np.mean(s >= c)) for c in cuts]
    return Calibration(thresholds=cuts, requested=list(shares), achieved=achieved, prompts=n)


def _rounding_keeps(cut: float, s: NDArray[np.float64]) -> bool:
    """True when rounding the cut point to 6 decimals splits the scores the same way."""
    r = round(cut, 6)
    return bool(np.sum(s >= r) == np.sum(s >= cut)) and 0.0 <= r <= 1.0


def spec_snippet(
    context: str,
    calibration: Calibration,
    weights: ScorerWeights | None,
    provenance: str,
) -> str:
    """A ZetaRouter spec fragment setting the context's thresholds (and its weights when they
    are not the shipped defaults, since the thresholds only hold for the scores they came from).
    """
    ctx: dict[str, object] = {"name": context, "thresholds": calibration.thresholds}
    if weights is not None:
        ctx["scorer"] = weights.model_dump(by_alias=True, exclude_none=True)
    doc = {"spec": {"router": {"contexts": [ctx]}}}
    shares = ", ".join(
        f"{100 * a:.1f}% at or above cut point {i + 1}" for i, a in enumerate(calibration.achieved)
    )
    header = [
        f"# zeta-router calibrate: context {context} on {calibration.prompts} prompts",
        f"# {provenance}",
        f"# resulting shares: {shares}",
        "# Merge into the ZetaRouter's spec.router.contexts (replace that context's entry).",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(doc, sort_keys=False)
