"""Routing quality of the shipped scorer on labelled data, measured honestly.

Prints:
1. grouped cross-validation by subject (the recipe that produced the shipped weights, refitted
   on each fold's training subjects) beside prompt length alone, a random router, the oracle,
   and a "subject oracle" that knows each subject's true net gain (a ceiling for any scorer
   that only tells subjects apart); plus a few other recipes for comparison; and the same folds
   judged on the math subjects only, and on their word problems (with the arithmetic-operator
   weight the shipped weights used to carry, and without quantity_relations, for comparison);
2. the shipped weights on all the data (in-sample: they were fitted on it);
3. the score distribution of the shipped weights, for choosing thresholds.

    .venv/bin/python benchmarks/routing_quality.py [--data DIR] [--repeats N]

The data folder defaults to $ZETA_ROUTER_EVAL_DATA, else data/routing-eval in the repository.
Figures only; this never fails on their values.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from zeta_router.quality import metrics
from zeta_router.quality.data import Dataset, load
from zeta_router.quality.evaluation import cross_validated
from zeta_router.quality.fit import (
    FEATURE_NAMES,
    FITTED_FEATURES,
    FIXED_WEIGHTS,
    FitConfig,
    cross_validate,
    group_folds,
)
from zeta_router.quality.report import table
from zeta_router.quality.scoring import score_prompts
from zeta_router.scoring.features import matrix
from zeta_router.scoring.scorer import default_weights

REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    env = os.environ.get("ZETA_ROUTER_EVAL_DATA")
    return (Path(env) if env else REPO / "data" / "routing-eval") / "mmlu"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.data.exists():
        # Not a failure of the code under measurement: `make bench` goes on with the others.
        print(f"skipped: no data at {args.data} (pass --data or set ZETA_ROUTER_EVAL_DATA)")
        return 0

    t0 = time.perf_counter()
    ds = load(args.data)
    x = matrix(ds.prompts)
    print(
        f"data: {args.data} — {len(ds)} prompts, {len(set(ds.groups.tolist()))} subjects, "
        f"{ds.excluded} contaminated left out; weak {100 * ds.weak.mean():.1f}%, "
        f"strong {100 * ds.strong.mean():.1f}%"
    )

    # 1. grouped cross-validation
    shipped = FitConfig()
    cv = cross_validated(
        ds,
        x,
        shipped,
        folds=args.folds,
        repeats=args.repeats,
        seed=args.seed,
        name="shipped recipe",
    )
    net = ds.strong.astype(np.float64) - ds.weak.astype(np.float64)
    subject_rate = np.zeros(len(ds))
    for g in np.unique(ds.groups):
        subject_rate[ds.groups == g] = net[ds.groups == g].mean()
    ceiling = metrics.mean_curve(
        [
            metrics.stratified_curve(
                subject_rate, ds.weak, ds.strong, group_folds(ds.groups, args.folds, args.seed + r)
            )
            for r in range(args.repeats)
        ]
    )
    rows = [*cv.summaries, metrics.summarise("subject oracle", ceiling, len(ds))]
    print()
    print(
        f"grouped cross-validation by subject: {cv.folds} folds x {cv.repeats} repeats "
        f"(seeds {args.seed}..{args.seed + args.repeats - 1}); each fold routes its own top share"
    )
    print(table(rows))
    by_repeat = np.array(cv.apgr_by_repeat["shipped recipe"])
    length_by_repeat = np.array(cv.apgr_by_repeat["prompt length"])
    print(
        f"shipped recipe APGR over repeats: mean {by_repeat.mean():.3f}, "
        f"min {by_repeat.min():.3f}, max {by_repeat.max():.3f}; "
        f"minus prompt length, paired: {np.mean(by_repeat - length_by_repeat):+.3f} "
        f"(sd {np.std(by_repeat - length_by_repeat):.3f})"
    )

    variants = {
        "no fixed weights (data only)": FitConfig(fixed={}),
        "gain target": FitConfig(target="gain"),
        "plain ridge (shrink to zero)": FitConfig(shrink_to="zero"),
        "all features, shrink to zero": FitConfig(
            features=FEATURE_NAMES, shrink_to="zero", l2=0.01
        ),
        "all features, shrink to equal": FitConfig(features=FEATURE_NAMES),
    }
    print()
    print("other recipes, same folds:")
    for name, cfg in variants.items():
        curves = []
        for r in range(args.repeats):
            res = cross_validate(
                x, ds.weak, ds.strong, ds.groups, ds.prompts, cfg, k=args.folds, seed=args.seed + r
            )
            curves.append(metrics.stratified_curve(res.decision, ds.weak, ds.strong, res.folds))
        c = metrics.mean_curve(curves)
        print(f"  {name:<32} APGR {c.apgr():.3f}  CPT(50%) {100 * c.cpt(0.5):.1f}%")

    math_subjects(ds, x, args)

    # 2. in-sample, through the sidecar's path
    weights = default_weights()
    scores = score_prompts(weights, ds.prompts)
    length = x[:, FEATURE_NAMES.index("log_prompt_tokens")]
    pooled = [
        metrics.evaluate("shipped weights", scores, ds.weak, ds.strong),
        metrics.evaluate("prompt length", length, ds.weak, ds.strong),
        *metrics.baselines(ds.weak, ds.strong),
    ]
    print()
    print("shipped weights on all the data, pooled (in-sample: fitted on this data):")
    print(table(pooled))

    # 3. distribution
    qs = [0.05, 0.1, 0.25, 0.5, 0.7, 0.75, 0.9, 0.95]
    print()
    print("score quantiles of the shipped weights on this data:")
    print("  " + "  ".join(f"p{int(100 * q)}={np.quantile(scores, q):.3f}" for q in qs))
    print("large-tier share at a threshold (score >= threshold goes large):")
    print(
        "  "
        + "  ".join(f"{t:.1f}:{100 * np.mean(scores >= t):.1f}%" for t in np.arange(0.1, 1.0, 0.1))
    )
    for share in (0.1, 0.2, 0.3, 0.5):
        print(f"  threshold for {100 * share:.0f}% large: {np.quantile(scores, 1 - share):.3f}")
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


MATH_SUBJECTS = ("abstract_algebra", "college_mathematics", "high_school_statistics")


def math_subjects(ds: Dataset, x: np.ndarray, args: argparse.Namespace) -> None:
    """The recipe with the old math cues, and without the relations between amounts
    (quantity_relations), judged on the math subjects (each routing its own top share) and
    on their word problems, from the same grouped folds."""
    names = ds.group_names
    groups = [names.index(n) for n in MATH_SUBJECTS if n in names]
    if not groups:
        return
    math = np.isin(ds.groups, groups)
    fi = {n: FEATURE_NAMES.index(n) for n in ("latex", "numbers", "log_question_tokens")}
    # Word problems: a question of 30+ tokens with numbers in it and no formula.
    words = (
        math
        & (x[:, fi["latex"]] == 0)
        & (x[:, fi["numbers"]] > 0)
        & (x[:, fi["log_question_tokens"]] > np.log1p(30))
    )
    length = x[:, FEATURE_NAMES.index("log_prompt_tokens")]
    recipes = {
        "shipped recipe": FitConfig(),
        "with math_operators 0.1": FitConfig(fixed={**FIXED_WEIGHTS, "math_operators": 0.1}),
        "without quantity_relations": FitConfig(
            features=tuple(f for f in FITTED_FEATURES if f != "quantity_relations")
        ),
    }
    out: dict[str, list[tuple[float, float, float]]] = {k: [] for k in [*recipes, "prompt length"]}
    for r in range(args.repeats):
        folds = None
        for name, cfg in recipes.items():
            cv = cross_validate(
                x, ds.weak, ds.strong, ds.groups, ds.prompts, cfg, k=args.folds, seed=args.seed + r
            )
            folds = cv.folds
            out[name].append(_three(cv.decision, ds, math, words, folds))
        assert folds is not None
        out["prompt length"].append(_three(length, ds, math, words, folds))
    gain = int((ds.strong[words].astype(int) - ds.weak[words].astype(int)).sum())
    print()
    print(
        f"math subjects ({', '.join(MATH_SUBJECTS)}: {int(math.sum())} prompts; high school "
        "mathematics left out, its strong-model labels are 3% correct), same folds:"
    )
    print(f"  {'':<30} {'math, within subject':>21} {'word problems':>14} {'all subjects':>13}")
    for name, rows in out.items():
        a = np.array(rows).mean(axis=0)
        print(f"  {name:<30} {a[0]:>21.3f} {a[1]:>14.3f} {a[2]:>13.3f}")
    print(
        f"  (word problems: {int(words.sum())} math prompts with numbers, no formula and a "
        f"question of 30+ tokens; net gain of the strong model on them: {gain} prompts)"
    )


def _three(
    scores: np.ndarray, ds: Dataset, math: np.ndarray, words: np.ndarray, folds: np.ndarray
) -> tuple[float, float, float]:
    return (
        metrics.stratified_curve(
            scores[math], ds.weak[math], ds.strong[math], ds.groups[math]
        ).apgr(),
        metrics.curve(scores[words], ds.weak[words], ds.strong[words]).apgr(),
        metrics.stratified_curve(scores, ds.weak, ds.strong, folds).apgr(),
    )


if __name__ == "__main__":
    sys.exit(main())
