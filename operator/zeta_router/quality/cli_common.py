"""Pieces shared by ``zeta-router eval``, ``fit`` and ``calibrate``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zeta_router.plotting import PlottingUnavailableError
from zeta_router.quality.calibrate import CalibrationError
from zeta_router.quality.data import DataError, Dataset, load
from zeta_router.quality.fit import FitError
from zeta_router.quality.metrics import MetricError
from zeta_router.quality.scoring import ScorerFileError

USER_ERRORS = (
    DataError,
    ScorerFileError,
    FitError,
    MetricError,
    CalibrationError,
    PlottingUnavailableError,
)

DATA_HELP = (
    "folder of labelled CSVs, one per subject, each with a 'prompt' column and one True/False "
    "column per model (e.g. data/routing-eval); searched recursively. Prompts listed "
    "in a *contaminated*.jsonl file there are left out"
)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help=DATA_HELP)
    parser.add_argument(
        "--weak-column",
        metavar="NAME",
        help="column of the weak (small) model; default: the less accurate of the two",
    )
    parser.add_argument(
        "--strong-column",
        metavar="NAME",
        help="column of the strong (large) model; default: the more accurate of the two",
    )
    parser.add_argument(
        "--include-contaminated",
        action="store_true",
        help="keep prompts listed in *contaminated*.jsonl (left out by default)",
    )
    parser.add_argument(
        "--limit-per-file",
        type=positive_int,
        metavar="N",
        help="use only the first N prompts of each file (quick runs)",
    )


def load_data(args: argparse.Namespace) -> Dataset:
    return load(
        args.data,
        weak_column=args.weak_column,
        strong_column=args.strong_column,
        exclude_contaminated=not args.include_contaminated,
        limit_per_file=args.limit_per_file,
    )


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {value}")
    return value


def data_description(ds: Dataset) -> dict[str, Any]:
    return {
        "prompts": len(ds),
        "subjects": len(set(ds.groups.tolist())),
        "excluded_contaminated": ds.excluded,
        "weak_model": ds.weak_model,
        "strong_model": ds.strong_model,
        "weak_accuracy": float(ds.weak.mean()),
        "strong_accuracy": float(ds.strong.mean()),
    }


def data_lines(ds: Dataset, data_dir: Path) -> list[str]:
    d = data_description(ds)
    return [
        f"data: {data_dir} — {d['prompts']} prompts in {d['subjects']} subjects"
        + (f" ({d['excluded_contaminated']} contaminated left out)" if ds.excluded else ""),
        f"weak:   {ds.weak_model} ({100 * d['weak_accuracy']:.1f}% correct)",
        f"strong: {ds.strong_model} ({100 * d['strong_accuracy']:.1f}% correct)",
    ]


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def guarded(command: str, body: Callable[[], int]) -> int:
    """Run a subcommand; a problem with the user's input is one line on stderr and exit 2."""
    try:
        return body()
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error worth a message. Point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except USER_ERRORS as exc:
        print(f"zeta-router {command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"zeta-router {command}: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 2
