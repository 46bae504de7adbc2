"""The replica picker, with no servers: bounded loads hold, keys move minimally when a replica
comes or goes, every router picks alike, and "no replica" is an answer, not an exception."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from zeta_router.router.picker import (
    REASONS,
    STRATEGIES,
    Ring,
    costs,
    load_bound,
    pick,
    prefix_key,
    stable_hash,
)


def urls(n: int) -> list[str]:
    return [f"http://10.0.0.{i + 1}:8000" for i in range(n)]


def owner(ring: Ring, key: int) -> int:
    return next(ring.walk(key))


def test_no_usable_replica_is_none_for_every_strategy() -> None:
    ring = Ring(urls(2))
    for strategy in STRATEGIES:
        assert pick(strategy, ring, [0, 0], [False, False], 1) is None
        assert pick(strategy, Ring([]), [], [], 1) is None


def test_every_reason_is_documented() -> None:
    ring = Ring(urls(3))
    seen = set()
    for strategy in STRATEGIES:
        for key in (None, 5, 2**63):
            for usable in ([True, True, True], [True, False, False], [False, True, True]):
                for local in (None, 0):
                    p = pick(strategy, ring, [0, 0, 0], usable, key, local=local)
                    assert p is not None
                    seen.add(p.reason)
    assert seen <= set(REASONS)


def test_the_same_prefix_picks_the_same_replica_on_any_router() -> None:
    # Two routers: rings built from the replicas listed in a different order agree.
    a, b = Ring(urls(4)), Ring(list(reversed(urls(4))))
    for key in (stable_hash(str(i).encode()) for i in range(200)):
        pa = pick("prefix", a, [0] * 4, [True] * 4, key)
        pb = pick("prefix", b, [0] * 4, [True] * 4, key)
        assert pa is not None
        assert pb is not None
        assert urls(4)[pa.index] == list(reversed(urls(4)))[pb.index]
        assert pa.reason == "prefix"


def test_a_busy_replica_spills_to_the_next_on_the_ring() -> None:
    ring = Ring(urls(3))
    key = stable_hash(b"system prompt")
    walk = list(ring.walk(key))
    loads = [0, 0, 0]
    loads[walk[0]] = 10
    p = pick("prefix", ring, loads, [True] * 3, key)
    assert p is not None
    assert p.index == walk[1]
    assert p.reason == "prefix_spill"


def test_an_ejected_replica_is_skipped_and_its_keys_go_to_the_next() -> None:
    ring = Ring(urls(3))
    key = stable_hash(b"conversation")
    walk = list(ring.walk(key))
    usable = [True] * 3
    usable[walk[0]] = False
    p = pick("prefix", ring, [0, 0, 0], usable, key)
    assert p is not None
    assert p.index == walk[1]


def test_least_loaded_prefers_the_local_replica_only_on_a_tie() -> None:
    ring = Ring(urls(3))
    assert pick("least-loaded", ring, [1, 1, 1], [True] * 3, None, local=2) == pick(
        "least-loaded", ring, [5, 1, 1], [True] * 3, None, local=2
    )
    p = pick("least-loaded", ring, [1, 1, 1], [True] * 3, None, local=2)
    assert p is not None
    assert (p.index, p.reason) == (2, "local_tie")
    p = pick("least-loaded", ring, [1, 0, 3], [True] * 3, None, local=2)
    assert p is not None
    assert (p.index, p.reason) == (1, "least_loaded")


def test_no_prompt_means_least_loaded_even_with_prefix() -> None:
    p = pick("prefix", Ring(urls(3)), [2, 0, 1], [True] * 3, None)
    assert p is not None
    assert (p.index, p.reason) == (1, "least_loaded")


def test_round_robin_turns() -> None:
    ring = Ring(urls(3))
    got = [pick("round-robin", ring, [0] * 3, [True] * 3, None, turn=t) for t in range(6)]
    assert [p.index for p in got if p] == [0, 1, 2, 0, 1, 2]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 8),
    factor=st.sampled_from([1.0, 1.1, 1.25, 2.0]),
    keys=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=300),
    hot=st.integers(0, 5),
)
def test_bounded_loads_hold(n: int, factor: float, keys: list[int], hot: int) -> None:
    """Requests arriving one after another (none finishing) never push a replica past
    ceil(factor * total / n), however skewed the keys (``hot``: many share one key)."""
    ring = Ring(urls(n))
    loads = [0] * n
    for i, key in enumerate(keys):
        k = keys[0] if hot and i % (hot + 1) else key
        p = pick("prefix", ring, loads, [True] * n, k, load_factor=factor)
        assert p is not None
        loads[p.index] += 1
        total = sum(loads)
        assert max(loads) <= load_bound(total - 1, n, factor)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 8),
    factor=st.sampled_from([1.0, 1.25, 2.0]),
    seconds=st.lists(st.floats(0.0, 100.0), min_size=8, max_size=8),
    keys=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=200),
)
def test_bounded_loads_hold_weighted_by_cost(
    n: int, factor: float, seconds: list[float], keys: list[int]
) -> None:
    """With replicas of different speeds, a prefix pick never takes a replica past the bound
    on its cost-weighted load, and the costs stay within their range around the mean."""
    ring = Ring(urls(n))
    usable = [True] * n
    cost = costs(seconds[:n], usable)
    weights = cost or [1.0] * n
    assert all(1 / 8 <= c <= 8 for c in weights)
    loads = [0] * n
    for key in keys:
        p = pick("prefix", ring, loads, usable, key, load_factor=factor, cost=cost)
        assert p is not None
        if p.reason in ("prefix", "prefix_spill"):
            total = sum(n_ * c for n_, c in zip(loads, weights, strict=True))
            bound = load_bound(total, n, factor)
            assert loads[p.index] == 0 or (loads[p.index] + 1) * weights[p.index] <= bound
        loads[p.index] += 1


def test_an_idle_replica_takes_its_own_keys_however_slow() -> None:
    ring = Ring(urls(2))
    key = next(k for k in range(1000) if owner(ring, k) == 1)
    slow = [0.125, 8.0]
    p = pick("prefix", ring, [0, 0], [True, True], key, cost=slow)
    assert p is not None
    assert (p.index, p.reason) == (1, "prefix")
    p = pick("prefix", ring, [0, 1], [True, True], key, cost=slow)  # busy and slow: spill
    assert p is not None
    assert (p.index, p.reason) == (0, "prefix_spill")


def test_equal_or_unknown_costs_pick_as_plain_loads() -> None:
    ring = Ring(urls(3))
    assert costs([0.0, 0.0, 0.0], [True] * 3) is None
    assert costs([2.0, 0.0, 0.0], [True] * 3) is None  # one known: nothing to compare
    assert costs([2.0, 0.0, 4.0], [True] * 3) == [2 / 3, 1.0, 4 / 3]  # unknown: the mean
    assert costs([2.0, 2.5, 2.9], [True] * 3) is None  # within COST_SPREAD: alike
    assert costs([2.0, 9.0, 4.0], [True, False, True]) == [2 / 3, 3.0, 4 / 3]  # usable ones' mean
    rnd = random.Random(7)
    for _ in range(500):
        loads = [rnd.randrange(6) for _ in range(3)]
        key = rnd.getrandbits(64)
        for strategy in ("prefix", "least-loaded"):
            plain = pick(strategy, ring, loads, [True] * 3, key, turn=1)
            same = pick(strategy, ring, loads, [True] * 3, key, turn=1, cost=[1.0] * 3)
            assert plain == same


def _share_of_slow(cost: list[float] | None, strategy: str, seed: int) -> float:
    """Replica 1 serves half as fast as replica 0; requests keep arriving (32 at a time in the
    system) with random prompt prefixes; each step one request finishes, on a replica drawn in
    proportion to its load times its speed. The share of requests replica 1 got."""
    rnd = random.Random(seed)
    ring = Ring(urls(2))
    speed = [2.0, 1.0]
    loads = [0, 0]
    got = [0, 0]
    keys = [rnd.getrandbits(64) for _ in range(40)]
    for step in range(4000):
        p = pick(strategy, ring, loads, [True, True], rnd.choice(keys), turn=step, cost=cost)
        assert p is not None
        loads[p.index] += 1
        got[p.index] += 1
        if sum(loads) >= 32:
            rates = [n * v for n, v in zip(loads, speed, strict=True)]
            done = 0 if rnd.random() * sum(rates) < rates[0] else 1
            loads[done] -= 1
    return got[1] / sum(got)


def test_a_replica_twice_as_slow_gets_fewer_requests() -> None:
    """Its measured time per request doubles its cost: it takes fewer requests than the fast
    one, and fewer than when loads were counted alike."""
    cost = costs([1.0, 2.0], [True, True])  # replica 1 takes twice as long
    assert cost == [2 / 3, 4 / 3]
    for strategy in ("prefix", "least-loaded"):
        for seed in range(3):
            weighted = _share_of_slow(cost, strategy, seed)
            plain = _share_of_slow(None, strategy, seed)
            assert weighted < 0.45
            assert weighted < plain


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 7), seed=st.integers(0, 2**32))
def test_keys_move_minimally_when_a_replica_is_added_or_removed(n: int, seed: int) -> None:
    rnd = random.Random(seed)
    keys = [rnd.getrandbits(64) for _ in range(2000)]
    before = urls(n)
    after = urls(n + 1)  # one more replica
    ring_b, ring_a = Ring(before), Ring(after)
    moved = 0
    for key in keys:
        was, now = before[owner(ring_b, key)], after[owner(ring_a, key)]
        if was != now:
            assert now == after[-1], "a key moved between two replicas that both stayed"
            moved += 1
    # The new replica takes about its share (1/(n+1)) and no more.
    assert moved <= len(keys) * (1.6 / (n + 1))
    # Removing it again moves back exactly those keys.
    assert all(
        before[owner(ring_b, key)] == after[owner(ring_a, key)]
        for key in keys
        if after[owner(ring_a, key)] != after[-1]
    )


def test_keys_spread_over_replicas_about_evenly() -> None:
    ring = Ring(urls(4))
    counts = [0] * 4
    for i in range(8000):
        counts[owner(ring, stable_hash(str(i).encode()))] += 1
    assert min(counts) > 8000 / 4 * 0.7
    assert max(counts) < 8000 / 4 * 1.3


def chat(*messages: tuple[str, str]) -> dict[str, object]:
    return {"messages": [{"role": r, "content": c} for r, c in messages]}


def test_the_turns_of_a_conversation_share_a_key() -> None:
    first = chat(("system", "Be brief."), ("user", "Name a prime."))
    later = chat(
        ("system", "Be brief."),
        ("user", "Name a prime."),
        ("assistant", "7"),
        ("user", "Another?"),
    )
    other = chat(("system", "Be brief."), ("user", "Name a colour."))
    assert prefix_key(first, 512) == prefix_key(later, 512)
    assert prefix_key(first, 512) != prefix_key(other, 512)


def test_a_long_shared_system_prompt_is_one_key() -> None:
    system = "You are a support agent for ACME. " * 40
    a = chat(("system", system), ("user", "My order is late."))
    b = chat(("system", system), ("user", "How do I return a parcel?"))
    assert prefix_key(a, 512) == prefix_key(b, 512)
    assert prefix_key(a, 4096) != prefix_key(b, 4096)


def test_prompts_without_text_have_no_key_and_odd_shapes_do_not_raise() -> None:
    assert prefix_key({"messages": []}, 512) is None
    assert prefix_key({"prompt": ""}, 512) is None
    assert prefix_key({"prompt": ["abc", "def"]}, 512) == prefix_key({"prompt": "abc"}, 512)
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert prefix_key(parts, 512) == prefix_key(chat(("user", "hi")), 512)
    assert prefix_key({"messages": ["x", {"role": 3, "content": None}]}, 512) is not None
    assert prefix_key({"prompt": "\ud800 lone surrogate"}, 512) is not None
