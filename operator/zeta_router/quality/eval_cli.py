"""``zeta-router eval``: how good are a scorer's routing decisions on labelled data?"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
from pathlib import Path

from zeta_router.plotting import require_matplotlib
from zeta_router.quality import cascade, metrics
from zeta_router.quality.cli_common import (
    add_data_arguments,
    data_description,
    data_lines,
    guarded,
    load_data,
    positive_int,
    print_json,
)
from zeta_router.quality.data import ANSWER_SUFFIX, Dataset
from zeta_router.quality.metrics import MetricError
from zeta_router.quality.online import (
    DEFAULT_MAX_LABELS,
    DEFAULT_REFIT_EVERY,
    OnlineResult,
    replay,
)
from zeta_router.quality.report import plot, table
from zeta_router.quality.scoring import load_scorer, score_prompts
from zeta_router.scoring.features import FEATURE_INDEX, matrix
from zeta_router.scoring.learner import SHRINK_TO, LearnerConfig, LearnError
from zeta_router.scoring.scorer import Scorer
from zeta_router.scoring.weights import ScorerWeights

DESCRIPTION = """\
Score every labelled prompt with the router's own feature extractor and scorer (the code path
the sidecar runs), then report how well the scores split the prompts between a weak (small)
and a strong (large) model: APGR, CPT(50%), CPT(80%) and accuracy when 10/20/30/50% of the
prompts go to the strong model, beside prompt length alone, a random router and the oracle.

The figures are in-sample when the scorer was fitted on the same data (the shipped default
weights were fitted on routing-eval); `zeta-router fit` reports honest, cross-validated ones.

With --online, the data is replayed as a stream of traffic instead: the prompts in one shuffled
order (fixed by --seed), each scored by the model learned from the labels of the prompts before
it only, then its label learned, with the operator's own learning code (refit every
--refit-every labels, a candidate adopted only when it beats the model in use on the most recent
labels held out). It reports the APGR of the second half of the stream, the learning curve (the
model in use after 250, 500, 1,000 and 2,000 labels, each judged on the second half), and the
refits. --shuffle-labels gives each prompt another's labels: a control that must stay at chance.

With --cascade (data with the small model's answers, columns `<model>_response`), a cascade is
measured too: the small tier answers every prompt, an answer-side judge (the arithmetic it
states re-evaluated, a final number, hedging, its length; plus a logistic part fitted on the
other folds) doubts some, and the most doubted go to the large tier. Its figures are
cross-validated (--folds x --repeats random folds) beside the scorer on the same folds, and
compared at equal cost, counting the small tier's extra calls, for small calls costing 10, 25
and 50 % of a large one.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_data_arguments(parser)
    parser.add_argument(
        "--scorer",
        type=Path,
        metavar="FILE",
        help="scorer weights (JSON/YAML from `zeta-router fit`) or a routing config "
        "(routing.yaml); default: the weights shipped with the router",
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        help="with a routing config as --scorer: the context whose weights to use "
        "(default: its defaultContext)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--scores-out",
        type=Path,
        metavar="FILE",
        help="write one CSV row per scored prompt: file (relative to --data), row (0-based "
        "record index in that file, header excluded), score",
    )
    parser.add_argument(
        "--plot", type=Path, metavar="FILE", help="write a PNG of PGR against strong-call share"
    )
    cascade = parser.add_argument_group("cascade (--cascade)")
    cascade.add_argument(
        "--cascade",
        action="store_true",
        help="also measure a cascade judged on the small model's answers (see above)",
    )
    cascade.add_argument(
        "--folds", type=positive_int, default=5, help="cross-validation folds (default: 5)"
    )
    cascade.add_argument(
        "--judge-out",
        type=Path,
        metavar="FILE",
        help="write the judge fitted on all the data (JSON; the router's default_judge.json "
        "is this on data/routing-eval/gsm8k-dev)",
    )
    cascade.add_argument(
        "--repeats", type=positive_int, default=10, help="repeats with other folds (default: 10)"
    )
    online = parser.add_argument_group("online learning (--online)")
    online.add_argument(
        "--online",
        action="store_true",
        help="replay the data as a stream and learn as the operator does (see above); "
        "--scorer is then the prior the learner corrects",
    )
    online.add_argument(
        "--seed", type=int, default=0, help="seed of the stream's order (default: 0)"
    )
    online.add_argument(
        "--refit-every",
        type=positive_int,
        default=DEFAULT_REFIT_EVERY,
        metavar="N",
        help=f"labels between refits (default: {DEFAULT_REFIT_EVERY})",
    )
    online.add_argument(
        "--max-labels",
        type=positive_int,
        default=DEFAULT_MAX_LABELS,
        metavar="N",
        help="most recent labels a refit uses, as the operator keeps per context "
        f"(default: {DEFAULT_MAX_LABELS})",
    )
    online.add_argument(
        "--min-labels",
        type=positive_int,
        default=LearnerConfig.min_labels,
        metavar="N",
        help=f"labels before the first refit (default: {LearnerConfig.min_labels})",
    )
    online.add_argument(
        "--l2",
        type=float,
        default=LearnerConfig.l2,
        help="L2 penalty on the hashed weights, towards --shrink-to "
        f"(default: {LearnerConfig.l2:g})",
    )
    online.add_argument(
        "--shrink-to",
        choices=SHRINK_TO,
        default=LearnerConfig.shrink_to,
        help="what the penalty pulls the weights towards: zero (no correction, the prior) or "
        "current (the model in use; successive refits then drift towards an unpenalised fit) "
        f"(default: {LearnerConfig.shrink_to})",
    )
    online.add_argument(
        "--shuffle-labels",
        action="store_true",
        help="give each prompt the labels of another (a control: APGR must stay at chance)",
    )


def run(args: argparse.Namespace) -> int:
    return guarded("eval", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.plot is not None:
        require_matplotlib()
    weights = load_scorer(args.scorer, args.context)
    ds = load_data(args)
    if args.online:
        if args.cascade:
            raise MetricError("--cascade and --online are separate reports; run them one at a time")
        return _run_online(args, weights, ds)
    if args.cascade:
        return _run_cascade(args, weights, ds)
    scores = score_prompts(weights, ds.prompts)
    length = matrix(ds.prompts)[:, FEATURE_INDEX["log_prompt_tokens"]]
    name = "scorer" if args.scorer is None else f"scorer ({args.scorer.name})"
    curves = {
        name: metrics.curve(scores, ds.weak, ds.strong),
        "prompt length": metrics.curve(length, ds.weak, ds.strong),
        "random": metrics.curve(metrics.random_scores(len(ds)), ds.weak, ds.strong),
        "oracle": metrics.curve(metrics.oracle_scores(ds.weak, ds.strong), ds.weak, ds.strong),
    }
    summaries = [metrics.summarise(k, c, len(ds)) for k, c in curves.items()]

    if args.scores_out is not None:
        with args.scores_out.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "row", "score"])
            for g, r, s in zip(ds.groups, ds.rows, scores, strict=True):
                writer.writerow([ds.files[int(g)], int(r), repr(float(s))])
    if args.plot is not None:
        plot(curves, args.plot, f"PGR vs strong-call share ({len(ds)} prompts)")

    if args.json:
        print_json(
            {
                "data": {"path": str(args.data), **data_description(ds)},
                "scorer": {
                    "file": None if args.scorer is None else str(args.scorer),
                    "context": args.context,
                    "source": weights.source,
                },
                "results": [s.as_dict() for s in summaries],
                "scores_out": None if args.scores_out is None else str(args.scores_out),
                "plot": None if args.plot is None else str(args.plot),
            }
        )
        return 0
    for line in data_lines(ds, args.data):
        print(line)
    print(f"scorer: {args.scorer or 'shipped default weights'} ({weights.source or 'no source'})")
    print()
    print(table(summaries))
    print()
    print(
        "APGR: area under the PGR curve (random 0.5). CPT(p): strong-call share needed to "
        "recover p of the gap."
    )
    if args.scores_out is not None:
        print(f"scores written to {args.scores_out}")
    if args.plot is not None:
        print(f"plot written to {args.plot}")
    return 0


def _run_cascade(args: argparse.Namespace, weights: ScorerWeights, ds: Dataset) -> int:
    if ds.weak_answers is None:
        raise MetricError(
            f"--cascade needs the small model's answers: a column "
            f"'{ds.weak_model}{ANSWER_SUFFIX}' in every file under {args.data}"
        )
    scores = score_prompts(weights, ds.prompts)
    length = matrix(ds.prompts)[:, FEATURE_INDEX["log_prompt_tokens"]]
    name = "scorer (prompt)" if args.scorer is None else f"scorer ({args.scorer.name})"
    result = cascade.study(
        ds.prompts,
        ds.weak_answers,
        ds.weak,
        ds.strong,
        scores,
        length,
        folds=args.folds,
        repeats=args.repeats,
        seed=args.seed,
        router_name=name,
    )
    if args.plot is not None:
        plot(result.curves, args.plot, f"cascade and routing, {len(ds)} prompts (CV)")
    if args.judge_out is not None:
        d = data_description(ds)
        judge = cascade.fit_judge(
            cascade.answer_matrix(ds.prompts, ds.weak_answers),
            ds.weak,
            source=f"zeta-router eval --cascade on {args.data.name or args.data} "
            f"({d['prompts']} answers of {ds.weak_model}): l2={cascade.JUDGE_L2:g}",
        )
        args.judge_out.write_text(
            json.dumps(judge.model_dump(by_alias=True), indent=2) + "\n", encoding="utf-8"
        )
    if args.json:
        print_json(
            {
                "data": {"path": str(args.data), **data_description(ds)},
                "scorer": {
                    "file": None if args.scorer is None else str(args.scorer),
                    "source": weights.source,
                },
                "cascade": result.as_dict(),
                "plot": None if args.plot is None else str(args.plot),
            }
        )
        return 0
    for line in data_lines(ds, args.data):
        print(line)
    print(f"scorer: {args.scorer or 'shipped default weights'} ({weights.source or 'no source'})")
    print(
        f"cross-validated: {result.folds} random folds x {result.repeats} repeats (seeds "
        f"{args.seed}..{args.seed + result.repeats - 1}); each fold escalates or routes its own "
        "top share. A cascade's share is the share it escalates to the large tier."
    )
    print()
    print(table(result.summaries))
    print()
    print("at equal cost (a cascade pays a small call for every request):")
    print("  small/large cost  escalated  cascade acc  scorer share  scorer acc  difference")
    for ratio, points in result.equal_cost.items():
        for p in points:
            print(
                f"  {ratio:>16.2f}  {100 * p.cascade_share:>8.0f}%  "
                f"{100 * p.cascade_accuracy:>10.1f}%  {100 * p.router_share:>11.1f}%  "
                f"{100 * p.router_accuracy:>9.1f}%  "
                f"{100 * (p.cascade_accuracy - p.router_accuracy):>+9.1f}"
            )
    if args.plot is not None:
        print(f"plot written to {args.plot}")
    if args.judge_out is not None:
        print(f"judge written to {args.judge_out}")
    return 0


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _run_online(args: argparse.Namespace, weights: ScorerWeights, ds: Dataset) -> int:
    try:
        # The operator's configuration for the same minLabels (spec.learning).
        cfg = LearnerConfig.for_labels(args.min_labels, l2=args.l2, shrink_to=args.shrink_to)
    except LearnError as exc:
        raise MetricError(str(exc)) from None
    result = replay(
        ds,
        Scorer(weights),
        cfg,
        seed=args.seed,
        refit_every=args.refit_every,
        max_labels=args.max_labels,
        shuffle_labels=args.shuffle_labels,
    )
    n, half = len(ds), result.half
    if half == 0:
        raise MetricError("the stream needs at least 2 prompts")
    second = slice(half, n)
    weak, strong = result.weak[second], result.strong[second]
    length = matrix([ds.prompts[int(i)] for i in result.order[second]])[
        :, FEATURE_INDEX["log_prompt_tokens"]
    ]
    curves = {
        "online learner": metrics.curve(result.scores[second], weak, strong),
        "prior alone": metrics.curve(result.prior_scores[second], weak, strong),
        "prompt length": metrics.curve(length, weak, strong),
        "random": metrics.curve(metrics.random_scores(n - half), weak, strong),
        "oracle": metrics.curve(metrics.oracle_scores(weak, strong), weak, strong),
    }
    summaries = [metrics.summarise(k, c, n - half) for k, c in curves.items()]
    windows = _windows(result, n)
    first_adoption = next(
        (at for at, r in zip(result.refit_at, result.refits, strict=True) if r.adopt), None
    )
    if args.scores_out is not None:
        with args.scores_out.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "row", "score"])
            for i, z in zip(result.order, result.scores, strict=True):
                writer.writerow(
                    [ds.files[int(ds.groups[i])], int(ds.rows[i]), repr(_sigmoid(float(z)))]
                )
    if args.plot is not None:
        plot(curves, args.plot, f"second half of an online stream ({n - half} prompts)")
    stream = {
        "prompts": n,
        "seed": args.seed,
        "refit_every": args.refit_every,
        "max_labels": args.max_labels,
        "min_labels": cfg.min_labels,
        "l2": cfg.l2,
        "shrink_to": cfg.shrink_to,
        "shuffled_labels": args.shuffle_labels,
        "refits": len(result.refits),
        "adopted": result.adopted,
        "first_adoption_after_labels": first_adoption,
    }
    if args.json:
        print_json(
            {
                "data": {"path": str(args.data), **data_description(ds)},
                "prior": {
                    "file": None if args.scorer is None else str(args.scorer),
                    "source": weights.source,
                },
                "stream": stream,
                "second_half": [s.as_dict() for s in summaries],
                "learning_curve": [
                    {
                        "labels": p.labels,
                        "apgr": p.apgr,
                        "prior_apgr": p.prior_apgr,
                        "adopted_refits": p.adopted_refits,
                    }
                    for p in result.curve
                ],
                "windows": windows,
                "scores_out": None if args.scores_out is None else str(args.scores_out),
                "plot": None if args.plot is None else str(args.plot),
            }
        )
        return 0
    for line in data_lines(ds, args.data):
        print(line)
    print(f"prior: {args.scorer or 'shipped default weights'} ({weights.source or 'no source'})")
    print(
        f"stream: {n} prompts in a shuffled order (seed {args.seed})"
        + (", labels shuffled across prompts (control)" if args.shuffle_labels else "")
        + f"; refit every {args.refit_every} labels on the most recent {args.max_labels}"
    )
    print(
        f"refits: {len(result.refits)}, adopted {result.adopted}"
        + (f" (first after {first_adoption} labels)" if first_adoption else "")
    )
    print()
    print(f"second half of the stream ({n - half} prompts, each scored before its label):")
    print(table(summaries))
    if result.curve:
        print()
        print("learning curve (the model in use after k labels, judged on the second half):")
        print("  labels   APGR   prior  refits adopted")
        for p in result.curve:
            print(f"  {p.labels:>6}  {p.apgr:.3f}  {p.prior_apgr:.3f}  {p.adopted_refits:>14}")
    print()
    print("stream windows (each prompt scored before its label was learned):")
    print("  prompts          APGR   prior")
    for w in windows:
        online, prior = w["apgr"], w["prior_apgr"]
        shown = "   n/a" if online is None or prior is None else f"{online:.3f}  {prior:.3f}"
        print(f"  {w['start']:>5}-{w['stop']:<7}  {shown}")
    if args.scores_out is not None:
        print(f"scores written to {args.scores_out} (stream order)")
    if args.plot is not None:
        print(f"plot written to {args.plot}")
    return 0


def _windows(result: OnlineResult, n: int) -> list[dict[str, object]]:
    edges = sorted({0, *(k for k in (250, 500, 1000, 2000) if k < result.half), result.half, n})
    return [
        {
            "start": a,
            "stop": b,
            "apgr": result.window_apgr(a, b),
            "prior_apgr": result.window_apgr(a, b, prior=True),
        }
        for a, b in itertools.pairwise(edges)
        if b > a
    ]
