"""The `zeta-router` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so `zeta-router router` in a sidecar does
not pay for the operator's imports (kopf, kubernetes) and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

from zeta_router import __version__


class Subcommand(NamedTuple):
    name: str
    module: str
    help: str


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("operator", "zeta_router.controller.cli", "run the ZetaRouter operator (kopf)"),
    Subcommand("router", "zeta_router.router.cli", "run the routing sidecar / standalone router"),
    Subcommand("crd", "zeta_router.api.cli", "print the ZetaRouter CRD generated from the models"),
    Subcommand("eval", "zeta_router.quality.eval_cli", "evaluate the scorer on labelled data"),
    Subcommand("fit", "zeta_router.quality.fit_cli", "fit scorer weights from labelled data"),
    Subcommand(
        "calibrate", "zeta_router.quality.calibrate_cli", "threshold for a target large-tier share"
    ),
    Subcommand("simulate", "zeta_router.sim.cli", "replay a trace against simulated tiers"),
    Subcommand("demo", "zeta_router.demo.cli", "run the local end-to-end demo"),
    Subcommand("cluster", "zeta_router.cluster.cli", "local control plane: up, down, status"),
)


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zeta-router",
        description=(
            "ZetaRouter: one OpenAI-compatible endpoint in front of a ladder of LLM tiers, "
            "routing each request to the cheapest tier that should answer it well."
        ),
    )
    parser.add_argument("--version", action="version", version=f"zeta-router {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported; the others are listed by name and help.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for sub in SUBCOMMANDS:
        sp = subparsers.add_parser(sub.name, help=sub.help, description=sub.help)
        if sub.name == chosen:
            module = importlib.import_module(sub.module)
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser(args_list)
    args = parser.parse_args(args_list)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    result: int = run(args)
    return result
