"""Routing-quality metrics on small hand-made cases whose APGR / CPT are known."""

from __future__ import annotations

import numpy as np
import pytest

from zeta_router.quality import metrics

# Four prompts: #1 and #2 only the strong model gets right, #0 both do, #3 only the weak one.
WEAK = [1, 0, 0, 1]
STRONG = [1, 1, 1, 0]
# weak accuracy 0.5, strong 0.75, gap 0.25


def test_perfect_order_by_hand() -> None:
    # Oracle order: #1, #2 (gain), #0 (neutral), #3 (loss).
    # perf at k=0..4: .5, .75, 1, 1, .75 -> PGR 0, 1, 2, 2, 1
    # APGR = 0.25 * (0.5 + 1.5 + 2 + 1.5) = 1.375; PGR reaches 0.5 halfway to the first prompt.
    c = metrics.curve([0.5, 0.9, 0.8, 0.1], WEAK, STRONG)
    assert c.apgr() == pytest.approx(1.375)
    assert c.cpt(0.5) == pytest.approx(0.125)
    assert c.cpt(1.0) == pytest.approx(0.25)
    assert c.cpt(2.0) == pytest.approx(0.5)
    assert c.perf_at(0.5) == pytest.approx(1.0)
    assert c.pgr_at(0.25) == pytest.approx(1.0)


def test_oracle_scores_give_the_perfect_order() -> None:
    oracle = metrics.evaluate("oracle", metrics.oracle_scores(WEAK, STRONG), WEAK, STRONG)
    assert oracle.apgr == pytest.approx(1.375)


def test_reversed_order_by_hand() -> None:
    # #3 (loss) first, then #0, then the gains: perf .5, .25, .25, .5, .75 -> PGR 0,-1,-1,0,1
    # APGR = 0.25 * (-0.5 - 1 - 0.5 + 0.5) = -0.375; PGR reaches 0.5 between 75% and 100%.
    c = metrics.curve([0.5, 0.1, 0.2, 0.9], WEAK, STRONG)
    assert c.apgr() == pytest.approx(-0.375)
    assert c.cpt(0.5) == pytest.approx(0.875)
    assert c.cpt(1.0) == pytest.approx(1.0)


def test_constant_scores_are_the_expected_random_router() -> None:
    rng = np.random.default_rng(3)
    weak = rng.random(500) < 0.6
    strong = rng.random(500) < 0.8
    s = metrics.evaluate("const", np.full(500, 0.3), weak, strong)
    assert s.apgr == pytest.approx(0.5)
    assert s.cpt[0.5] == pytest.approx(0.5)
    assert s.cpt[0.8] == pytest.approx(0.8)
    # Accuracy moves linearly from weak to strong.
    for share, acc in s.accuracy_at.items():
        assert acc == pytest.approx(weak.mean() + share * (strong.mean() - weak.mean()))


def test_random_scores_average_to_half() -> None:
    rng = np.random.default_rng(0)
    weak = rng.random(2000) < 0.6
    strong = rng.random(2000) < 0.8
    apgrs = [metrics.evaluate("r", rng.random(2000), weak, strong).apgr for _ in range(20)]
    assert abs(float(np.mean(apgrs)) - 0.5) < 0.03


def test_ties_count_as_their_expected_value() -> None:
    # A tie between a gain and a loss is worth nothing on average: taking half of the pair
    # leaves accuracy where it is at both ends of the tie.
    weak = [0, 1, 0]
    strong = [1, 0, 1]
    c = metrics.curve([0.7, 0.7, 0.1], weak, strong)
    # group {#0, #1}: net 0; then #2: +1. perf: 1/3 -> 1/3 -> 2/3
    assert list(c.x) == pytest.approx([0.0, 2 / 3, 1.0])
    assert c.perf_at(1 / 3) == pytest.approx(1 / 3)


def test_baselines_pair() -> None:
    rnd, orc = metrics.baselines(WEAK, STRONG)
    assert rnd.name == "random"
    assert rnd.apgr == pytest.approx(0.5)
    assert orc.name == "oracle"
    assert orc.apgr == pytest.approx(1.375)


@pytest.mark.parametrize(
    ("scores", "weak", "strong", "message"),
    [
        ([0.1, 0.2], [1, 0], [0, 1], "equally accurate"),
        ([0.1], [1, 0], [0, 1], "same length"),
        ([], [], [], "no prompts"),
        ([float("nan"), 0.2], [1, 0], [1, 1], "finite"),
        ([0.1, 0.2], [1, 2], [1, 1], "0/1"),
    ],
)
def test_errors(scores: list[float], weak: list[int], strong: list[int], message: str) -> None:
    with pytest.raises(metrics.MetricError, match=message):
        metrics.curve(scores, weak, strong)


def test_share_out_of_range() -> None:
    with pytest.raises(metrics.MetricError, match="share"):
        metrics.curve([0.1, 0.2, 0.3, 0.4], WEAK, STRONG).perf_at(1.5)


def test_stratified_curve_single_stratum_is_the_plain_curve() -> None:
    scores = [0.5, 0.9, 0.8, 0.1]
    plain = metrics.curve(scores, WEAK, STRONG)
    strat = metrics.stratified_curve(scores, WEAK, STRONG, [7, 7, 7, 7])
    assert strat.apgr() == pytest.approx(plain.apgr())
    assert strat.cpt(0.5) == pytest.approx(plain.cpt(0.5))


def test_stratified_apgr_is_gap_weighted_mean_of_strata() -> None:
    rng = np.random.default_rng(1)
    n = 600
    strata = np.repeat([0, 1, 2], n // 3)
    weak = rng.random(n) < np.where(strata == 1, 0.4, 0.7)
    strong = rng.random(n) < 0.85
    scores = rng.random(n) + 0.5 * (strong & ~weak)
    strat = metrics.stratified_curve(scores, weak, strong, strata)
    num = den = 0.0
    for g in range(3):
        m = strata == g
        gap = strong[m].mean() - weak[m].mean()
        num += m.sum() * gap * metrics.curve(scores[m], weak[m], strong[m]).apgr()
        den += m.sum() * gap
    assert strat.apgr() == pytest.approx(num / den)
    # Ranking across strata is not what is judged: shifting one stratum changes nothing.
    shifted = scores + np.where(strata == 2, 100.0, 0.0)
    again = metrics.stratified_curve(shifted, weak, strong, strata)
    assert again.apgr() == pytest.approx(strat.apgr())
    assert metrics.curve(shifted, weak, strong).apgr() != pytest.approx(strat.apgr())


def test_mean_curve_averages_apgr() -> None:
    a = metrics.curve([0.5, 0.9, 0.8, 0.1], WEAK, STRONG)
    b = metrics.curve([0.5, 0.1, 0.2, 0.9], WEAK, STRONG)
    m = metrics.mean_curve([a, b])
    assert m.apgr() == pytest.approx((1.375 - 0.375) / 2)
    with pytest.raises(metrics.MetricError):
        metrics.mean_curve([])


def test_summary_as_dict_is_json_ready() -> None:
    s = metrics.evaluate("x", [0.5, 0.9, 0.8, 0.1], WEAK, STRONG)
    d = s.as_dict()
    assert d["apgr"] == pytest.approx(1.375)
    assert set(d["cpt"]) == {"0.5", "0.8"}  # type: ignore[arg-type]
    assert set(d["accuracy_at_strong_share"]) == {"0.1", "0.2", "0.3", "0.5"}  # type: ignore[arg-type]
