"""Score + a context's increasing cut points -> tier index (0 = smallest tier).

With cut points ``c_0 < c_1 < ... < c_{n-2}`` for ``n`` tiers, a score goes to tier ``k`` where
``k`` is the number of cut points that are ``<= score``: a score equal to a cut point already
belongs to the larger tier. Any number of tiers; one tier means no cut points.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from itertools import pairwise


class Selector:
    __slots__ = ("cuts",)

    def __init__(self, cuts: Sequence[float]) -> None:
        cuts = tuple(float(c) for c in cuts)
        for c in cuts:
            if not (0.0 <= c <= 1.0) or math.isnan(c):
                raise ValueError(f"cut point {c} is outside [0, 1]")
        if any(b <= a for a, b in pairwise(cuts)):
            raise ValueError(f"cut points {list(cuts)} are not strictly increasing")
        self.cuts = cuts

    @property
    def tiers(self) -> int:
        return len(self.cuts) + 1

    def select(self, score: float) -> int:
        return bisect_right(self.cuts, score)
