"""``zeta-router crd``: the ZetaRouter CRD (or the API reference) generated from the models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """\
examples:
  zeta-router crd | kubectl apply -f -          install or update the CRD
  zeta-router crd --output crds/zetarouter.yaml write the checked-in copy (make crd)
  zeta-router crd --check crds/zetarouter.yaml  exit 1 if the file is out of date
  zeta-router crd --reference --output docs/api.md
  zeta-router crd --readme README.md            regenerate the README's CR reference block
  zeta-router crd --readme README.md --check README.md
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print the ZetaRouter CustomResourceDefinition (zeta.ai/v1alpha1) generated from the "
        "API models, as YAML. The output is byte-for-byte stable."
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        type=Path,
        help="write to FILE instead of standard output",
    )
    parser.add_argument(
        "--check",
        metavar="FILE",
        type=Path,
        help="compare with FILE instead of printing; exit status 1 when they differ",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="produce the Markdown API reference (docs/api.md) instead of the CRD",
    )
    parser.add_argument(
        "--readme",
        metavar="FILE",
        type=Path,
        help=(
            "produce FILE with its generated CR-reference block (between the BEGIN/END CR "
            "reference markers) regenerated; with neither --output nor --check, FILE is "
            "rewritten in place"
        ),
    )


def run(args: argparse.Namespace) -> int:
    if args.readme is not None:
        from zeta_router.api.reference import MissingMarkersError, splice_readme

        try:
            text = splice_readme(args.readme.read_text(encoding="utf-8"))
        except OSError as e:
            print(f"zeta-router crd: cannot read {args.readme}: {e.strerror}", file=sys.stderr)
            return 1
        except MissingMarkersError as e:
            print(f"zeta-router crd: {args.readme}: {e}", file=sys.stderr)
            return 1
        if args.output is None and args.check is None:
            args.output = args.readme
    elif args.reference:
        from zeta_router.api.reference import render_reference

        text = render_reference()
    else:
        from zeta_router.api.crd import crd_yaml

        text = crd_yaml()
    if args.check is not None:
        try:
            current = args.check.read_text(encoding="utf-8")
        except OSError as e:
            print(f"zeta-router crd: cannot read {args.check}: {e.strerror}", file=sys.stderr)
            return 1
        if current != text:
            what = (
                "CR reference block"
                if args.readme is not None
                else "API reference"
                if args.reference
                else "CRD"
            )
            print(
                f"zeta-router crd: {args.check} is out of date with the {what} generated from "
                "the models; regenerate it with `make crd`",
                file=sys.stderr,
            )
            return 1
        return 0
    if args.output is not None:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as e:
            print(f"zeta-router crd: cannot write {args.output}: {e.strerror}", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0
