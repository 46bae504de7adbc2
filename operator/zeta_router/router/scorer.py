"""Features -> score in [0, 1] with a logistic model (see ``ScorerWeights``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from functools import cache
from importlib import resources

from zeta_router.api.routing import ScorerWeights
from zeta_router.router.features import FEATURE_NAMES


class Scorer:
    __slots__ = ("_bias", "_items", "weights")

    def __init__(self, weights: ScorerWeights) -> None:
        unknown = sorted(set(weights.weights) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(f"scorer weights name unknown features: {', '.join(unknown)}")
        self.weights = weights
        self._bias = weights.bias
        self._items = tuple((k, v) for k, v in weights.weights.items() if v != 0.0)

    def score(self, features: Mapping[str, float]) -> float:
        z = self._bias
        for name, w in self._items:
            z += w * features.get(name, 0.0)
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)


@cache
def default_weights() -> ScorerWeights:
    """The weights shipped in the package (``default_weights.json``)."""
    text = resources.files("zeta_router.router").joinpath("default_weights.json").read_text()
    return ScorerWeights.model_validate(json.loads(text))
