"""The weights of the logistic scorer, as carried by a ZetaRouter spec, the routing config and
``default_weights.json``. A plain pydantic model with no dependency on the API layer: the API
and the routing config import it from here, so the scoring core sits below both."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ScorerWeights(BaseModel):
    """A logistic scorer: score = sigmoid(bias + sum(weights[f] * feature[f])).

    Feature names are those produced by ``zeta_router.scoring.features``; a feature missing from
    ``weights`` has weight 0, and a weight naming an unknown feature is a validation error at load.
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    bias: float = Field(default=0.0, description="Intercept of the logistic model.")
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Weight per feature name (features not listed weigh 0).",
    )
    source: str | None = Field(default=None, description="Where these weights came from.")
