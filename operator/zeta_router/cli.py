"""The `zeta-router` command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so `zeta-router router` in a sidecar does
not pay for the operator's imports (kopf, kubernetes) and vice versa.

Development commands (`demo`, `cluster`) are not part of this package: the repository's
development tooling (``devtools/``, installed by ``make venv``, absent from the image) adds them
through the ``zeta_router.commands`` entry-point group, each entry naming a :class:`Subcommand`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import NamedTuple

from zeta_router import __version__


class Subcommand(NamedTuple):
    name: str
    module: str
    help: str


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("operator", "zeta_router.controller.cli", "run the ZetaRouter operator (kopf)"),
    Subcommand("router", "zeta_router.router.cli", "run the routing sidecar / standalone router"),
    Subcommand(
        "drain",
        "zeta_router.router.drain_cli",
        "drain this pod's router by hand (what its preStop hook does), then wait",
    ),
    Subcommand(
        "render",
        "zeta_router.controller.render_cli",
        "print a ZetaRouter's children as the operator would apply them",
    ),
    Subcommand("crd", "zeta_router.api.cli", "print the ZetaRouter CRD generated from the models"),
    Subcommand("eval", "zeta_router.quality.eval_cli", "evaluate the scorer on labelled data"),
    Subcommand("fit", "zeta_router.quality.fit_cli", "fit scorer weights from labelled data"),
    Subcommand(
        "calibrate", "zeta_router.quality.calibrate_cli", "threshold for a target large-tier share"
    ),
    Subcommand("simulate", "zeta_router.sim.cli", "replay a trace against simulated tiers"),
)

PLUGIN_GROUP = "zeta_router.commands"

# Commands of the development tooling, named here only to say where they come from when the
# tooling is not installed (in the image, or a plain `pip install zeta-router`).
DEVELOPMENT_COMMANDS = ("demo", "cluster")


def plugin_subcommands() -> tuple[Subcommand, ...]:
    """The subcommands other installed packages add (the development tooling's)."""
    found: list[Subcommand] = []
    for ep in entry_points(group=PLUGIN_GROUP):
        sub = ep.load()
        if isinstance(sub, Subcommand):
            found.append(sub)
    return tuple(sorted(found, key=lambda s: s.name))


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
    subcommands = SUBCOMMANDS
    if chosen is None or chosen not in {s.name for s in SUBCOMMANDS}:
        # Scanning installed packages costs milliseconds: not done for a built-in command.
        subcommands += plugin_subcommands()
    for sub in subcommands:
        sp = subparsers.add_parser(sub.name, help=sub.help, description=sub.help)
        if sub.name == chosen:
            module = importlib.import_module(sub.module)
            module.add_arguments(sp)
            sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if not a.startswith("-")), None)
    if chosen in DEVELOPMENT_COMMANDS and chosen not in {s.name for s in plugin_subcommands()}:
        print(
            f"zeta-router: `{chosen}` is development tooling and is not installed here. "
            "In a clone of the repository, `make venv` installs it (devtools/); "
            "the container image carries only the operator and the router.",
            file=sys.stderr,
        )
        return 2
    parser = _build_parser(args_list)
    args = parser.parse_args(args_list)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    result: int = run(args)
    return result
