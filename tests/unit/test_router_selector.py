import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeta_router.api.defaults import spread_thresholds
from zeta_router.scoring.selector import Selector


def test_two_tiers_cut_point_belongs_to_the_larger_tier() -> None:
    s = Selector([0.5])
    assert s.tiers == 2
    assert s.select(0.0) == 0
    assert s.select(0.4999) == 0
    assert s.select(0.5) == 1
    assert s.select(1.0) == 1


def test_one_tier_has_no_cut_points() -> None:
    s = Selector([])
    assert s.tiers == 1
    assert s.select(0.0) == s.select(1.0) == 0


def test_four_tiers() -> None:
    s = Selector([0.2, 0.5, 0.8])
    assert [s.select(x) for x in (0.1, 0.2, 0.3, 0.5, 0.79, 0.8, 0.99)] == [0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize(
    ("cuts", "message"),
    [
        ([0.5, 0.5], "strictly increasing"),
        ([0.6, 0.4], "strictly increasing"),
        ([-0.1], "outside"),
        ([1.1], "outside"),
        ([float("nan")], "outside"),
    ],
)
def test_bad_cut_points_are_rejected(cuts: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Selector(cuts)


@given(
    st.lists(st.floats(0.0, 1.0), min_size=0, max_size=8, unique=True).map(sorted),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
)
def test_selection_is_monotonic_and_in_range(cuts: list[float], a: float, b: float) -> None:
    s = Selector(cuts)
    lo, hi = sorted((a, b))
    assert 0 <= s.select(lo) <= s.select(hi) <= len(cuts)
    # The tier is the number of cut points at or below the score.
    assert s.select(hi) == sum(1 for c in cuts if c <= hi)


@pytest.mark.parametrize("tiers", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("center", [0.05, 0.4, 0.5, 0.95])
def test_spread_thresholds_are_valid_cut_points(tiers: int, center: float) -> None:
    cuts = spread_thresholds(center, tiers)
    assert len(cuts) == tiers - 1
    Selector(cuts)  # strictly increasing, inside [0, 1]
    if tiers == 2:
        assert cuts == [center]


def test_spread_thresholds_rejects_bad_reference() -> None:
    with pytest.raises(ValueError, match="inside"):
        spread_thresholds(1.0, 3)
    with pytest.raises(ValueError, match="at least one"):
        spread_thresholds(0.5, 0)
