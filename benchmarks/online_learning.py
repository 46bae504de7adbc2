"""The online learner on the routing-eval data, several streams, beside what is possible.

For each seed: the data as one shuffled stream of traffic, replayed with the operator's own
learning code (``zeta-router eval --online``, defaults): the APGR of the second half of the
stream (each prompt scored before its label was learned) beside the shipped prior alone; the
learning curve (the model in use after 250, 500, 1,000 and 2,000 labels, judged on the second
half); the APGR of windows of the stream; when the first model was adopted.

Then ceilings on the same second halves: a router that knows each prompt's subject exactly and
routes by the subject's net gain rate, estimated from the labels of the first k prompts of the
stream (k = 1,000, 2,000, half), or known exactly (the "subject oracle"). Learning a
deployment's topics can at best approach those.

    .venv/bin/python benchmarks/online_learning.py [--data DIR] [--seeds 0 1 2]

Figures only; this never fails on their values.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

from zeta_router.quality import metrics
from zeta_router.quality.data import Dataset, load
from zeta_router.quality.online import CHECKPOINTS, replay
from zeta_router.scoring.learner import LearnerConfig
from zeta_router.scoring.scorer import default_scorer

REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    env = os.environ.get("ZETA_ROUTER_EVAL_DATA")
    return (Path(env) if env else REPO / "data" / "routing-eval") / "mmlu"


def subject_ceilings(ds: Dataset, order: np.ndarray, half: int) -> dict[str, float]:
    """APGR on the second half of routing by subject rate, estimated from the first k."""
    net = ds.strong.astype(np.float64) - ds.weak.astype(np.float64)
    groups = ds.groups[order]
    test = order[half:]
    out: dict[str, float] = {}
    for k in (1000, 2000, half):
        seen = order[:k]
        total = np.zeros(len(ds.files))
        count = np.zeros(len(ds.files))
        np.add.at(total, ds.groups[seen], net[seen])
        np.add.at(count, ds.groups[seen], 1)
        prior_rate = net[seen].mean()
        rate = (total + 5 * prior_rate) / (count + 5)  # shrunk towards the overall rate
        out[f"subject rates from {k} labels"] = metrics.curve(
            rate[groups[half:]], ds.weak[test], ds.strong[test]
        ).apgr()
    true = np.array([net[ds.groups == g].mean() for g in range(len(ds.files))])
    out["subject oracle"] = metrics.curve(
        true[groups[half:]], ds.weak[test], ds.strong[test]
    ).apgr()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    if not args.data.exists():
        print(f"skipped: no data at {args.data} (pass --data or set ZETA_ROUTER_EVAL_DATA)")
        return 0
    ds = load(args.data)
    prior = default_scorer()
    cfg = LearnerConfig.for_labels(LearnerConfig.min_labels)
    print(f"data: {args.data} — {len(ds)} prompts; learner: {cfg}")
    for seed in args.seeds:
        t0 = time.perf_counter()
        r = replay(ds, prior, cfg, seed=seed)
        n, half = len(ds), r.half
        first = next((at for at, s in zip(r.refit_at, r.refits, strict=True) if s.adopt), None)
        print()
        print(
            f"seed {seed}: second half APGR {r.window_apgr(half, n):.3f} "
            f"(prior alone {r.window_apgr(half, n, prior=True):.3f}); "
            f"{len(r.refits)} refits, {r.adopted} adopted, the first after {first} labels "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        print("  learning curve (model in use after k labels, on the second half):")
        for p in r.curve:
            print(
                f"    {p.labels:>5}: {p.apgr:.3f} (prior {p.prior_apgr:.3f}, "
                f"{p.adopted_refits} adopted)"
            )
        edges = [0, *(k for k in CHECKPOINTS if k < half), half, n]
        print("  stream windows (online / prior):")
        for a, b in itertools.pairwise(edges):
            online, alone = r.window_apgr(a, b), r.window_apgr(a, b, prior=True)
            if online is not None and alone is not None:
                print(f"    {a:>5}-{b:<5}: {online:.3f} / {alone:.3f}")
        print("  ceilings on the same second half:")
        for name, value in subject_ceilings(ds, r.order, half).items():
            print(f"    {name:<30} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
