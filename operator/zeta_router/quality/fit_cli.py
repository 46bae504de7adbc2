"""``zeta-router fit``: fit the router's scorer weights from labelled data, with honest figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from zeta_router.plotting import require_matplotlib
from zeta_router.quality.cli_common import (
    add_data_arguments,
    data_description,
    data_lines,
    guarded,
    load_data,
    positive_int,
    print_json,
)
from zeta_router.quality.evaluation import check_folds, cross_validated
from zeta_router.quality.fit import (
    FITTED_FEATURES,
    FIXED_WEIGHTS,
    TARGETS,
    FitConfig,
    FitError,
    fit,
)
from zeta_router.quality.report import plot, table
from zeta_router.quality.scoring import dump_weights
from zeta_router.scoring.features import FEATURE_NAMES, matrix

DESCRIPTION = f"""\
Fit the weights of the router's logistic scorer from labelled prompts and write them as a file
usable as a context's scorer (or with `zeta-router eval --scorer`).

Before the final fit on all the data, the same recipe is cross-validated grouped by subject
(a subject's prompts are never both in training and test), repeated with different folds; the
table shows those figures beside prompt length, a random router and the oracle on the same
folds. Those are the figures to expect on subjects the scorer has not seen.

Targets: gain (the weak model fails, the strong one succeeds), net_gain (cost-weighted: 1 when
only the strong model is right, 0 when only the weak one is, 0.5 otherwise), weak_fails.

Default fitted features: {", ".join(FITTED_FEATURES)}.
Fixed (hand-set, not fitted) by default: {", ".join(FIXED_WEIGHTS)}.
All features: {", ".join(FEATURE_NAMES)}.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_data_arguments(parser)
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE",
        help="where to write the weights: JSON for a .json name, else YAML",
    )
    parser.add_argument(
        "--target", choices=TARGETS, default="net_gain", help="what to predict (default: net_gain)"
    )
    parser.add_argument(
        "--features",
        default="default",
        metavar="LIST",
        help="features to fit: 'default', 'all', or a comma-separated list of feature names",
    )
    parser.add_argument(
        "--no-fixed",
        action="store_true",
        help="leave out the hand-set fixed weights (request shape, code, reasoning cues)",
    )
    parser.add_argument(
        "--l2",
        type=float,
        default=10.0,
        help="L2 penalty per prompt on the fitted weights' departure from --shrink-to "
        "(standardised units); larger trusts the data less (default: 10)",
    )
    parser.add_argument(
        "--shrink-to",
        choices=("equal", "zero"),
        default="equal",
        help="what the penalty pulls the fitted weights towards: equal weights on standardised "
        "features, whose common scale is fitted freely (default; robust on unseen subjects), "
        "or zero (plain ridge)",
    )
    parser.add_argument(
        "--spread",
        default="0.8",
        metavar="P",
        help="rescale so the training median scores 0.5 and the 10th..90th percentile range "
        "is as wide as 1-P..P (default 0.8); 'none' keeps the logistic model's probability "
        "scale",
    )
    parser.add_argument(
        "--folds", type=positive_int, default=5, help="cross-validation folds (default: 5)"
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="cross-validation repeats with different folds (default: 3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the folds (default: 0)")
    parser.add_argument(
        "--no-cv", action="store_true", help="skip cross-validation (no honest figures)"
    )
    parser.add_argument(
        "--source", metavar="TEXT", help="text stored in the weights' `source` field"
    )
    parser.add_argument(
        "--plot", type=Path, metavar="FILE", help="write a PNG of the cross-validated PGR curves"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _config(args: argparse.Namespace) -> FitConfig:
    if args.features == "default":
        features = FITTED_FEATURES
    elif args.features == "all":
        features = FEATURE_NAMES
    else:
        features = tuple(f.strip() for f in args.features.split(",") if f.strip())
    if args.spread.lower() == "none":
        spread = None
    else:
        try:
            spread = float(args.spread)
        except ValueError:
            raise FitError(
                f"--spread must be a number in (0.5, 1) or 'none', got {args.spread!r}"
            ) from None
    return FitConfig(
        target=args.target,
        l2=args.l2,
        features=features,
        fixed={} if args.no_fixed else dict(FIXED_WEIGHTS),
        spread=spread,
        shrink_to=args.shrink_to,
    )


def run(args: argparse.Namespace) -> int:
    return guarded("fit", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.plot is not None:
        require_matplotlib()
    cfg = _config(args)
    if args.out.parent and not args.out.parent.exists():
        raise FitError(f"the folder of --out ({args.out.parent}) does not exist")
    ds = load_data(args)
    if not args.no_cv:
        check_folds(ds, args.folds)
    x = matrix(ds.prompts)
    cv = None
    if not args.no_cv:
        cv = cross_validated(
            ds, x, cfg, folds=args.folds, repeats=args.repeats, seed=args.seed, name="fitted scorer"
        )
    model = fit(x, ds.weak, ds.strong, cfg)
    d = data_description(ds)
    source = args.source or (
        f"zeta-router fit on {args.data.name or args.data} ({d['prompts']} prompts, "
        f"{d['subjects']} subjects): {cfg.describe()}"
    )
    weights = model.to_weights(source)
    dump_weights(weights, args.out)
    if cv is not None and args.plot is not None:
        plot(
            cv.curves,
            args.plot,
            f"grouped {cv.folds}-fold CV x{cv.repeats} ({len(ds)} prompts)",
        )

    if args.json:
        print_json(
            {
                "data": {"path": str(args.data), **d},
                "config": {
                    "target": cfg.target,
                    "l2": cfg.l2,
                    "shrink_to": cfg.shrink_to,
                    "spread": cfg.spread,
                    "features": list(cfg.features),
                    "fixed": cfg.fixed_only,
                },
                "cross_validation": None if cv is None else cv.as_dict(),
                "weights": weights.model_dump(by_alias=True),
                "out": str(args.out),
            }
        )
        return 0
    for line in data_lines(ds, args.data):
        print(line)
    print(f"recipe: {cfg.describe()}")
    if cv is not None:
        print()
        print(
            f"grouped cross-validation by subject: {cv.folds} folds x {cv.repeats} repeats "
            f"(seed {cv.seed}); each fold routes its own top share"
        )
        print(table(cv.summaries))
        spread = cv.apgr_by_repeat["fitted scorer"]
        print(f"fitted scorer APGR by repeat: {', '.join(f'{a:.3f}' for a in spread)}")
    print()
    print(f"weights (fitted on all {len(ds)} prompts), bias {weights.bias:+.4f}:")
    for name, w in weights.weights.items():
        kind = "fitted" if name in cfg.features else "fixed"
        print(f"  {name:<22} {w:+.4f}  ({kind})")
    print(f"written to {args.out}")
    if cv is not None and args.plot is not None:
        print(f"plot written to {args.plot}")
    return 0
