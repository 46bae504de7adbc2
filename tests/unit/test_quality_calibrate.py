"""Thresholds for a target large-tier share, and the spec snippet that carries them."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from zeta_router.api.routing import ScorerWeights
from zeta_router.quality.calibrate import CalibrationError, spec_snippet, thresholds_for_shares
from zeta_router.scoring.selector import Selector


def test_share_is_met_exactly_with_the_router_selector() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    cal = thresholds_for_shares(scores, [0.3])
    assert cal.achieved == [pytest.approx(0.3)]
    selector = Selector(cal.thresholds)
    routed = [selector.select(float(s)) for s in scores]
    assert sum(routed) == 300
    assert cal.prompts == 1000


def test_several_tiers() -> None:
    scores = np.linspace(0.0, 1.0, 101)
    cal = thresholds_for_shares(scores, [0.5, 0.2])
    assert cal.thresholds[0] < cal.thresholds[1]
    tiers = np.array([Selector(cal.thresholds).select(float(s)) for s in scores])
    assert np.mean(tiers >= 1) == pytest.approx(0.5, abs=0.006)
    assert np.mean(tiers == 2) == pytest.approx(0.2, abs=0.006)


def test_extremes() -> None:
    scores = [0.1, 0.2, 0.3, 0.4]
    assert thresholds_for_shares(scores, [1.0]).achieved == [1.0]
    none = thresholds_for_shares(scores, [0.0])
    assert none.achieved == [0.0]
    assert none.thresholds[0] <= 1.0


def test_ties_are_reported_not_hidden() -> None:
    scores = [0.5] * 10 + [0.9]
    cal = thresholds_for_shares(scores, [0.3])
    # Only one prompt scores above the tie: the share actually obtained is stated.
    assert cal.achieved[0] != pytest.approx(0.3)
    with pytest.raises(CalibrationError, match="tie"):
        thresholds_for_shares([0.5] * 10, [0.5, 0.3])


@pytest.mark.parametrize(
    ("scores", "shares", "message"),
    [
        ([], [0.3], "no prompts"),
        ([0.1], [], "at least one share"),
        ([0.1], [1.2], r"\[0, 1\]"),
        ([0.1, 0.2], [0.2, 0.5], "strictly decreasing"),
        ([0.1, 0.2], [0.3, 0.3], "strictly decreasing"),
    ],
)
def test_errors(scores: list[float], shares: list[float], message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        thresholds_for_shares(scores, shares)


def test_spec_snippet_is_yaml_for_the_context() -> None:
    cal = thresholds_for_shares(np.linspace(0, 1, 11), [0.3])
    text = spec_snippet("ZetaHRM", cal, None, "data: x")
    assert text.startswith("# zeta-router calibrate: context ZetaHRM on 11 prompts")
    doc = yaml.safe_load(text)
    assert doc == {
        "spec": {"router": {"contexts": [{"name": "ZetaHRM", "thresholds": cal.thresholds}]}}
    }

    weights = ScorerWeights(bias=-1.0, weights={"tools": 1.0}, source="s")
    doc = yaml.safe_load(spec_snippet("ZetaHRM", cal, weights, "data: x"))
    scorer = doc["spec"]["router"]["contexts"][0]["scorer"]
    assert ScorerWeights.model_validate(scorer) == weights
