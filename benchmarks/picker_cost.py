"""What the replica picker costs per request, in CPU: hashing the prompt's prefix and choosing a
replica (the router's own code, no I/O), for a few replica counts.

    .venv/bin/python benchmarks/picker_cost.py

A tier with one replica costs nothing of this: the router neither hashes nor chooses. Prints
microseconds per request (best of 5 rounds, so that other work on the machine counts least).
"""

from __future__ import annotations

import time

from zeta_router.router.config import compile_config, standalone_config
from zeta_router.router.metrics import RouterMetrics
from zeta_router.router.picker import prefix_key
from zeta_router.router.replicas import Replicas

SYSTEM = "You are a support assistant for a large online shop. " * 40  # ~2,000 characters
BODY = {
    "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "My parcel has not arrived, what can I do?"},
        {"role": "assistant", "content": "Let me check. What is the order number?"},
        {"role": "user", "content": "It is 12345."},
    ]
}
ROUNDS, N = 5, 20_000


def best(fn: object) -> float:
    assert callable(fn)
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(N):
            fn()
        times.append((time.perf_counter() - t0) / N)
    return min(times) * 1e6


def main() -> None:
    cost = best(lambda: prefix_key(BODY, 512))
    print(f"prefix key (512 characters of a ~2,000-character system prompt): {cost:.2f} us")
    for n in (2, 4, 8, 32):
        urls = ",".join(f"http://10.0.0.{i + 1}:8000" for i in range(n))
        for strategy in ("prefix", "least-loaded"):
            cfg = compile_config(
                standalone_config([("small", urls)], balancing={"strategy": strategy})
            )
            reps = Replicas(cfg, RouterMetrics(), frozenset(), seed=1)
            tier = cfg.tiers[0]
            for r in reps.of(tier).replicas[: n // 2]:
                reps.begin(r)  # some load, as under traffic
            key = prefix_key(BODY, 512)

            def choose(reps: Replicas = reps, tier: object = tier, key: int | None = key) -> None:
                reps.choose(tier, key, (), 0.0)  # type: ignore[arg-type]

            print(f"choose, {n:>2} replicas, {strategy:<12}: {best(choose):.2f} us")


if __name__ == "__main__":
    main()
