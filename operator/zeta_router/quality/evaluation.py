"""Honest figures for a fitting recipe: grouped cross-validation, with baselines on the same
folds.

For each repeat (a different seed, so different folds), every fold is scored by a model fitted
on the other folds' subjects only; each fold then routes its own top share to the strong model
(``metrics.stratified_curve``), and repeats are averaged (``metrics.mean_curve``). Prompt
length, the random router and the oracle are judged on exactly the same folds, so the rows of
the resulting table are comparable with each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zeta_router.quality import metrics
from zeta_router.quality.data import Dataset
from zeta_router.quality.fit import FitConfig, FloatArray, cross_validate, group_folds
from zeta_router.scoring.features import FEATURE_INDEX

LENGTH_FEATURE = "log_prompt_tokens"


@dataclass(frozen=True)
class CVResult:
    summaries: list[metrics.Summary]
    curves: dict[str, metrics.Curve]
    apgr_by_repeat: dict[str, list[float]]
    folds: int
    repeats: int
    seed: int
    dropped_duplicates: int

    def as_dict(self) -> dict[str, object]:
        return {
            "method": "grouped cross-validation by subject; each fold routes its own top share",
            "folds": self.folds,
            "repeats": self.repeats,
            "seed": self.seed,
            "training_rows_dropped_as_duplicates_of_test_prompts": self.dropped_duplicates,
            "results": [s.as_dict() for s in self.summaries],
            "apgr_by_repeat": self.apgr_by_repeat,
        }


def cross_validated(
    ds: Dataset,
    x: FloatArray,
    cfg: FitConfig,
    *,
    folds: int = 5,
    repeats: int = 3,
    seed: int = 0,
    name: str = "fitted scorer",
    cpt_levels: Sequence[float] = metrics.DEFAULT_CPT_LEVELS,
    shares: Sequence[float] = metrics.DEFAULT_SHARES,
) -> CVResult:
    length = x[:, FEATURE_INDEX[LENGTH_FEATURE]]
    rnd = metrics.random_scores(len(ds))
    orc = metrics.oracle_scores(ds.weak, ds.strong)
    per: dict[str, list[metrics.Curve]] = {
        name: [],
        "prompt length": [],
        "random": [],
        "oracle": [],
    }
    dropped = 0
    for r in range(repeats):
        cv = cross_validate(
            x, ds.weak, ds.strong, ds.groups, ds.prompts, cfg, k=folds, seed=seed + r
        )
        dropped = max(dropped, cv.dropped_duplicates)
        for key, scores in (
            (name, cv.decision),
            ("prompt length", length),
            ("random", rnd),
            ("oracle", orc),
        ):
            per[key].append(metrics.stratified_curve(scores, ds.weak, ds.strong, cv.folds))
    curves = {k: metrics.mean_curve(v) for k, v in per.items()}
    summaries = [metrics.summarise(k, c, len(ds), cpt_levels, shares) for k, c in curves.items()]
    return CVResult(
        summaries=summaries,
        curves=curves,
        apgr_by_repeat={k: [c.apgr() for c in v] for k, v in per.items()},
        folds=min(folds, int(np.unique(ds.groups).size)),
        repeats=repeats,
        seed=seed,
        dropped_duplicates=dropped,
    )


def check_folds(ds: Dataset, folds: int) -> None:
    """Fail early, with a message, when the data cannot be cross-validated that way."""
    group_folds(ds.groups, folds, 0)
