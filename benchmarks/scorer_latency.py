"""Cost of the router's decision path: feature extraction + scoring of one request.

Prints p50 / p99 in microseconds for 2 KB requests of several kinds (prose, multiple choice,
code, non-Latin text, a multi-turn chat) and for a 16 KB one, through ``Scorer.score_body``
(what a request costs) and ``extract`` + ``Scorer.score`` (the dict path). Aim: p50 under
200 us for 2 KB.

Then the same requests through a context with a learned correction (hashed word uni/bigrams and
the cheap features on top of the prior), as the operator would deliver it: fitted on the
routing-eval data (--data) and pruned to the largest size one context may take in the routing
ConfigMap. Aim: p50 under 300 us for 2 KB. The model's size is printed too.

Figures only; the machine may be shared, so read them as upper bounds.

    .venv/bin/python benchmarks/scorer_latency.py [--iterations N] [--data DIR]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zeta_router.quality.data import load
from zeta_router.quality.online import featurise, net_gain_labels
from zeta_router.scoring import ngrams
from zeta_router.scoring.features import extract
from zeta_router.scoring.learned import (
    MAX_BYTES_PER_CONTEXT,
    CompiledCorrection,
    LearnedScorer,
    bytes_per_context,
    serialised_size,
)
from zeta_router.scoring.learner import Labelled, LearnerConfig, fit, prune
from zeta_router.scoring.scorer import default_scorer

REPO = Path(__file__).resolve().parents[1]


def sized(text: str, size: int) -> str:
    return (text * (size // len(text) + 1))[:size]


PROSE = (
    "The committee reviewed the proposal in detail and, although several members raised "
    "concerns about the budget, it agreed that the project should proceed if the timeline "
    "can be kept. Why would the delay matter for the second phase? "
)
MC = (
    "A landowner conveyed a parcel to a buyer, who recorded the deed two weeks later. Which "
    "of the following best describes the buyer's interest if the statute is a race-notice one?\n"
    "A. A fee simple absolute\nB. A life estate\nC. Nothing, since the deed was not recorded\n"
    "D. A fee simple subject to the prior purchaser's claim\nAnswer:\n"
)
CODE = (
    "Explain step by step why this fails and fix it:\n```python\ndef total(xs):\n"
    "    s = 0\n    for x in xs:\n        s += x;\n    return s / len(xs)\n```\n"
)
CJK = "请逐步解释为什么这个算法的时间复杂度是对数级别的\uff0c并给出证明。"


def bodies() -> dict[str, dict[str, Any]]:
    chat = {
        "messages": [
            {"role": "system", "content": sized("You are a careful assistant. ", 300)},
            {"role": "user", "content": sized(PROSE, 600)},
            {"role": "assistant", "content": sized(PROSE, 500)},
            {"role": "user", "content": sized(CODE, 650)},
        ],
        "max_tokens": 512,
        "tools": [{"type": "function", "function": {"name": "run"}}],
    }
    one = {
        k: {"messages": [{"role": "user", "content": sized(v, 2048)}]}
        for k, v in {
            "prose 2KB": PROSE,
            "multiple choice 2KB": MC,
            "code 2KB": CODE,
            "CJK 2KB": CJK,
        }.items()
    }
    return {
        **one,
        "4-turn chat + tools 2KB": chat,
        "prose 16KB": {"messages": [{"role": "user", "content": sized(PROSE, 16384)}]},
    }


def timings(fn: Callable[[], object], n: int) -> tuple[float, float]:
    for _ in range(min(200, n)):
        fn()
    out = []
    gc.disable()
    try:
        for _ in range(n):
            t = time.perf_counter_ns()
            fn()
            out.append(time.perf_counter_ns() - t)
    finally:
        gc.enable()
    out.sort()
    return statistics.median(out) / 1000, out[int(0.99 * (n - 1))] / 1000


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--data", type=Path, default=REPO / "data" / "routing-eval" / "mmlu")
    args = ap.parse_args()
    scorer = default_scorer()
    print(
        f"{'request':<26} {'score_body p50':>15} {'p99':>8}   {'extract+score p50':>18} {'p99':>8}"
    )
    for name, body in bodies().items():
        b50, b99 = timings(lambda body=body: scorer.score_body(body), args.iterations)
        d50, d99 = timings(lambda body=body: scorer.score(extract(body)), args.iterations)
        print(f"{name:<26} {b50:>12.1f} us {b99:>6.1f} us   {d50:>15.1f} us {d99:>6.1f} us")
    if not args.data.exists():
        print(f"\nlearned correction: skipped, no data at {args.data}")
        return 0
    learned = learned_scorer(args.data)
    model = learned.correction.to_model()
    print(
        f"\nwith a learned correction: {learned.correction.keys.size} hashed weights, "
        f"{serialised_size(model) / 1024:.1f} KiB in the ConfigMap (budget per context: "
        + ", ".join(f"{bytes_per_context(n) // 1024} KiB for {n}" for n in (1, 4, 32))
        + " contexts)"
    )
    print(f"{'request':<26} {'prior p50':>12} {'p99':>8}   {'prior+learned p50':>18} {'p99':>8}")
    for name, body in bodies().items():
        b50, b99 = timings(lambda body=body: scorer.score_body(body), args.iterations)
        l50, l99 = timings(lambda body=body: learned.score_body(body), args.iterations)
        print(f"{name:<26} {b50:>9.1f} us {b99:>6.1f} us   {l50:>15.1f} us {l99:>6.1f} us")
    return 0


def learned_scorer(data: Path) -> LearnedScorer:
    """A correction as large as one context may have, fitted on all of ``data``."""
    ds = load(data)
    x, idx = featurise(ds.prompts, ngrams.DEFAULT_BITS)
    labelled = Labelled(x, idx, net_gain_labels(ds.weak, ds.strong))
    prior = default_scorer()
    full = fit(labelled, prior, CompiledCorrection.zero(), LearnerConfig())
    return LearnedScorer(prior, prune(full, MAX_BYTES_PER_CONTEXT))


if __name__ == "__main__":
    sys.exit(main())
