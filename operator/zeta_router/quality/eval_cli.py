"""``zeta-router eval``: how good are a scorer's routing decisions on labelled data?"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from zeta_router.plotting import require_matplotlib
from zeta_router.quality import metrics
from zeta_router.quality.cli_common import (
    add_data_arguments,
    data_description,
    data_lines,
    guarded,
    load_data,
    print_json,
)
from zeta_router.quality.report import plot, table
from zeta_router.quality.scoring import load_scorer, score_prompts
from zeta_router.scoring.features import FEATURE_INDEX, matrix

DESCRIPTION = """\
Score every labelled prompt with the router's own feature extractor and scorer (the code path
the sidecar runs), then report how well the scores split the prompts between a weak (small)
and a strong (large) model: APGR, CPT(50%), CPT(80%) and accuracy when 10/20/30/50% of the
prompts go to the strong model, beside prompt length alone, a random router and the oracle.

The figures are in-sample when the scorer was fitted on the same data (the shipped default
weights were fitted on routing-eval); `zeta-router fit` reports honest, cross-validated ones.
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


def run(args: argparse.Namespace) -> int:
    return guarded("eval", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.plot is not None:
        require_matplotlib()
    weights = load_scorer(args.scorer, args.context)
    ds = load_data(args)
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
