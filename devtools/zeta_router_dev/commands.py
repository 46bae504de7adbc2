"""The `zeta-router` subcommands the development tooling adds (entry points of the
``zeta_router.commands`` group). Cheap to import: the command modules load only when chosen."""

from __future__ import annotations

from zeta_router.cli import Subcommand

DEMO = Subcommand("demo", "zeta_router_dev.demo.cli", "run the local end-to-end demo")
CLUSTER = Subcommand(
    "cluster",
    "zeta_router_dev.cluster.cli",
    "local cluster: up, down, status",
)
IMAGES = Subcommand(
    "images",
    "zeta_router_dev.images.cli",
    "build the container images the real node runs (buildah, no registry)",
)
