"""`zeta-router images build|list|load`: the container images of the real node."""

from __future__ import annotations

import argparse
import sys

from zeta_router_dev.images.build import (
    IMAGE_NAMES,
    LLAMACPP_IMAGE,
    LLAMACPP_MODEL,
    PAUSE_IMAGE,
    PROJECT_IMAGE,
    ImageBuilder,
    ImageBuildError,
    images_dir,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Build the container images a real local node runs, with buildah and no registry: "
        f"{PROJECT_IMAGE} (the Dockerfile, on a Debian base made with debootstrap from this "
        f"machine's apt mirror), {LLAMACPP_IMAGE} (llama.cpp's server from xllamacpp with "
        f"SmolLM2-135M-Instruct at {LLAMACPP_MODEL}) and {PAUSE_IMAGE} (the pod sandbox). "
        "Python packages come from the index this machine's pip is configured for. An image "
        "is rebuilt only when its inputs change (a content hash); archives are kept under "
        f"{images_dir()}/archives."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  zeta-router images build              # what is missing or out of date\n"
        "  zeta-router images build llamacpp --force\n"
        "  zeta-router images list\n"
        "  zeta-router images load               # into the running real node's containerd\n"
    )
    parser.add_argument("action", choices=("build", "list", "load"), help="what to do")
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"images to build (default all: {', '.join(IMAGE_NAMES)})",
    )
    parser.add_argument("--force", action="store_true", help="build: rebuild even when cached")


def run(args: argparse.Namespace) -> int:
    def say(msg: str) -> None:
        print(f"-- {msg}", file=sys.stderr)

    builder = ImageBuilder(log=say)
    names = tuple(args.names) or IMAGE_NAMES
    try:
        if args.action == "list":
            return _list(builder)
        built = builder.build(names, force=args.force)
        if args.action == "load":
            from zeta_router_dev.cluster.node import NodeError, RealNode

            try:
                RealNode().load_images(built)
            except NodeError as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
    except ImageBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for image in built:
        how = "cached" if image.cached else f"built in {image.seconds:.0f}s"
        print(f"{image.ref:<40} {how:<16} {image.archive}")
    return 0


def _list(builder: ImageBuilder) -> int:
    index = builder.index()
    if not index:
        print(f"no images built yet in {builder.root} (run `zeta-router images build`)")
        return 0
    for name, entry in sorted(index.items()):
        print(f"{name:<12} {entry.ref:<45} inputs {entry.digest[:12]}  {entry.archive or '-'}")
    return 0
