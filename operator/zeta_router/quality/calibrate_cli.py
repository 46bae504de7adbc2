"""``zeta-router calibrate``: the threshold that sends a chosen share of traffic to the large
tier."""

from __future__ import annotations

import argparse
from pathlib import Path

from zeta_router.quality.calibrate import spec_snippet, thresholds_for_shares
from zeta_router.quality.cli_common import guarded, print_json, share
from zeta_router.quality.data import load_request_bodies
from zeta_router.quality.scoring import load_scorer
from zeta_router.scoring.features import extract
from zeta_router.scoring.scorer import Scorer

DESCRIPTION = """\
Score a sample of prompts with the router's own scorer and print the cut point(s) that send
the requested share of them to the large tier (scores at or above a cut point go to the larger
tier), plus a ZetaRouter spec snippet for the context. Calibrate on prompts that look like the
traffic the context will see: labelled CSVs (only the 'prompt' column is read) or JSONL files
with one chat/completion request body per line.

Two tiers take one share (--large-share 0.3). For more tiers give one share per tier boundary,
smallest tier's boundary first, strictly decreasing: --large-share 0.5 0.2 sends 50% to the
middle tier or above and 20% to the top tier.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        metavar="PATH",
        help="a file or folder of .csv (with a 'prompt' column) and/or .jsonl request bodies",
    )
    parser.add_argument(
        "--context", required=True, metavar="NAME", help="the context the thresholds are for"
    )
    parser.add_argument(
        "--large-share",
        required=True,
        nargs="+",
        type=share,
        metavar="SHARE",
        help="fraction of prompts to send to the large tier (one per tier boundary)",
    )
    parser.add_argument(
        "--scorer",
        type=Path,
        metavar="FILE",
        help="scorer weights (from `zeta-router fit`) or a routing config holding the context; "
        "default: the weights shipped with the router",
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="also write the spec snippet to FILE"
    )
    parser.add_argument(
        "--include-contaminated",
        action="store_true",
        help="keep prompts listed in *contaminated*.jsonl (left out by default)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    return guarded("calibrate", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    weights = load_scorer(args.scorer, args.context, context_applies=False)
    bodies = load_request_bodies(args.data, exclude_contaminated=not args.include_contaminated)
    scorer = Scorer(weights)
    scores = [scorer.score(extract(b)) for b in bodies]
    cal = thresholds_for_shares(scores, args.large_share)
    # Thresholds only hold for the scores they were computed from: carry custom weights along.
    snippet = spec_snippet(
        args.context,
        cal,
        weights if args.scorer is not None else None,
        f"data: {args.data}; scorer: {args.scorer or 'shipped default weights'}",
    )
    if args.out is not None:
        args.out.write_text(snippet, encoding="utf-8")
    if args.json:
        print_json(
            {
                "context": args.context,
                "prompts": cal.prompts,
                "thresholds": cal.thresholds,
                "requested_shares": cal.requested,
                "achieved_shares": cal.achieved,
                "scorer": str(args.scorer) if args.scorer else None,
                "snippet": snippet,
                "out": None if args.out is None else str(args.out),
            }
        )
        return 0
    for i, (t, req, got) in enumerate(
        zip(cal.thresholds, cal.requested, cal.achieved, strict=True)
    ):
        print(
            f"cut point {i + 1}: {t:.6g}  (requested {100 * req:.1f}% at or above, "
            f"got {100 * got:.1f}% of {cal.prompts} prompts)"
        )
    print()
    print(snippet, end="")
    if args.out is not None:
        print(f"\nsnippet written to {args.out}")
    return 0
