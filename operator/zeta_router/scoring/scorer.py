"""Features -> score in [0, 1] with a logistic model (see ``ScorerWeights``).

``score = sigmoid(bias + sum(weights[f] * features[f]))``; a feature without a weight counts 0.
Higher means "more deserving of a larger tier"; the router compares it with a context's cut
points. With the shipped weights the scale is relative to the data they were fitted on (the
median prompt there scores 0.5); see docs/routing-quality.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray

from zeta_router.scoring.features import FEATURE_INDEX, FEATURE_NAMES, vector
from zeta_router.scoring.weights import ScorerWeights


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class Scorer:
    """A validated, ready-to-use logistic scorer. Immutable; safe to share between tasks."""

    __slots__ = ("_bias", "_coef", "_items", "_terms", "weights")

    def __init__(self, weights: ScorerWeights) -> None:
        unknown = sorted(set(weights.weights) - set(FEATURE_NAMES))
        if unknown:
            raise ValueError(
                f"scorer weights name unknown features: {', '.join(unknown)} "
                f"(known: {', '.join(FEATURE_NAMES)})"
            )
        bad = [k for k, v in weights.weights.items() if not math.isfinite(v)]
        if not math.isfinite(weights.bias):
            bad.insert(0, "bias")
        if bad:
            raise ValueError(f"scorer weights must be finite numbers: {', '.join(bad)}")
        self.weights = weights
        self._bias = weights.bias
        self._items = tuple((k, v) for k, v in weights.weights.items() if v != 0.0)
        self._terms = tuple((FEATURE_INDEX[k], v) for k, v in self._items)
        self._coef = np.array([weights.weights.get(f, 0.0) for f in FEATURE_NAMES])

    def decision(self, features: Mapping[str, float]) -> float:
        """The logit ``bias + sum(w * f)`` before the sigmoid."""
        z = self._bias
        for name, w in self._items:
            z += w * features.get(name, 0.0)
        return z

    def score(self, features: Mapping[str, float]) -> float:
        """Score of a feature mapping as returned by ``features.extract``."""
        return _sigmoid(self.decision(features))

    def decision_vector(self, values: Sequence[float]) -> float:
        """The logit of a feature list in ``FEATURE_NAMES`` order (``features.vector``)."""
        z = self._bias
        for i, w in self._terms:
            z += w * values[i]
        return z

    def score_vector(self, values: Sequence[float]) -> float:
        """Score of a feature list in ``FEATURE_NAMES`` order (``features.vector``)."""
        return _sigmoid(self.decision_vector(values))

    def score_body(self, body: Mapping[str, Any]) -> float:
        """Score of a request body: ``score(extract(body))`` without building the dict."""
        return self.score_vector(vector(body))

    def decision_matrix(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Logits of a feature matrix (rows from ``features.matrix``), vectorised."""
        out: NDArray[np.float64] = self._bias + x @ self._coef
        return out

    def score_matrix(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Scores of a feature matrix (rows from ``features.matrix``), vectorised."""
        out: NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * self.decision_matrix(x)))
        return out


@cache
def default_weights() -> ScorerWeights:
    """The weights shipped in the package (``default_weights.json``)."""
    text = resources.files("zeta_router.scoring").joinpath("default_weights.json").read_text()
    return ScorerWeights.model_validate(json.loads(text))


@cache
def default_scorer() -> Scorer:
    """A ``Scorer`` over ``default_weights()``, built once."""
    return Scorer(default_weights())
