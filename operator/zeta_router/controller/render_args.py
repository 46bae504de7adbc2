"""The command-line flags that shape every ZetaRouter's children, shared by `zeta-router
operator` and `zeta-router render` so that both read the same settings from the same flags:
the router image, the NetworkPolicy per ZetaRouter, and the pod policy (``api.pod_policy``)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from zeta_router.api.defaults import ROUTER_IMAGE
from zeta_router.api.pod_policy import (
    DEFAULT_CACHE_VOLUME_TYPES,
    EXTERNAL_URLS_ANNOTATION,
    SECRET_REFS_MODES,
    USABLE_BY_ANNOTATION,
    PodPolicy,
)
from zeta_router.controller.desired import RenderSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--router-image",
        default=os.environ.get("ZETA_ROUTER_IMAGE", ROUTER_IMAGE),
        metavar="IMAGE",
        help="image of the router sidecar in every tier's pods; normally this operator's own "
        "image (default: $ZETA_ROUTER_IMAGE, else %(default)s)",
    )
    parser.add_argument(
        "--network-policy",
        action="store_true",
        help="give every ZetaRouter a NetworkPolicy: its model servers can be reached only "
        "from its own pods (the routers) and from --metrics-from",
    )
    parser.add_argument(
        "--metrics-from",
        default="[]",
        metavar="JSON",
        help="with --network-policy: who scrapes the model servers' and routers' metrics, as a "
        "JSON list of NetworkPolicy peers (the `from` of a NetworkPolicy rule); default: nobody",
    )
    parser.add_argument(
        "--operator-from",
        default="[]",
        metavar="JSON",
        help="with --network-policy: this operator's own pods, as a JSON list of NetworkPolicy "
        "peers, admitted to the routers' admin port (the learner collects hashed samples "
        "there, spec.learning); the chart sets it; default: nobody",
    )
    policy = parser.add_argument_group(
        "pod policy",
        "what a ZetaRouter may put into its pods (docs/security.md); a ZetaRouter that\n"
        "breaks a rule gets SpecValid=False and a Warning Event naming the rule, and no change",
    )
    policy.add_argument(
        "--allowed-cache-volume",
        action="append",
        default=None,
        metavar="TYPE",
        help="a volume type spec.tiers[].modelCache may use (repeatable; default: "
        f"{', '.join(DEFAULT_CACHE_VOLUME_TYPES)}); '' allows none",
    )
    policy.add_argument(
        "--allow-root",
        action="store_true",
        help="allow spec.tiers[].runAsUser: 0 (model servers running as root)",
    )
    policy.add_argument(
        "--allowed-model-image-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="model-server images (the engines' defaults included) must start with one of "
        "these (repeatable; default: any image), e.g. registry.example.com/models/",
    )
    policy.add_argument(
        "--allowed-router-image-prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="spec.router.image must start with one of these (repeatable; default: any image)",
    )
    policy.add_argument(
        "--secret-refs",
        choices=SECRET_REFS_MODES,
        default="marked",
        help="which Secrets env valueFrom.secretKeyRef and external tiers' apiKeySecretRef may "
        f"name: marked (default: only Secrets annotated {USABLE_BY_ANNOTATION} with the "
        f"ZetaRouter's name or '*', and an external key only to a baseUrl its Secret's "
        f"{EXTERNAL_URLS_ANNOTATION} lists), any Secret of the namespace, or none",
    )


def peers(value: str, flag: str) -> tuple[dict[str, Any], ...]:
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise SystemExit(f"error: {flag} is not JSON: {e}") from None
    if not isinstance(parsed, list) or not all(isinstance(p, dict) and p for p in parsed):
        raise SystemExit(
            f"error: {flag} must be a JSON list of NetworkPolicy peers, e.g. "
            '[{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]'
        )
    return tuple(parsed)


def pod_policy(args: argparse.Namespace) -> PodPolicy:
    volumes = args.allowed_cache_volume
    return PodPolicy(
        cache_volume_types=(
            DEFAULT_CACHE_VOLUME_TYPES
            if volumes is None
            else tuple(dict.fromkeys(v for v in volumes if v))
        ),
        allow_root=bool(args.allow_root),
        model_image_prefixes=tuple(p for p in args.allowed_model_image_prefix if p),
        router_image_prefixes=tuple(p for p in args.allowed_router_image_prefix if p),
        secret_refs=args.secret_refs,
    )


def render_settings(args: argparse.Namespace) -> RenderSettings:
    """The settings these flags give (``SystemExit`` with a message for a bad value)."""
    return RenderSettings(
        router_image=args.router_image,
        network_policy=bool(args.network_policy),
        scrapers=peers(args.metrics_from, "--metrics-from"),
        operators=peers(args.operator_from, "--operator-from"),
        pod_policy=pod_policy(args),
    )
