"""A ZetaRouter's Services (pure).

- :func:`build_tier_service`: ``<router>-<tier>``, the tier's model servers on the tier's port
  (the routers of the other tiers reach the tier through it).
- :func:`build_tier_replicas_service`: ``<router>-<tier>-replicas``, headless: its DNS name
  resolves to the tier's ready pods, so every router reaches each replica itself and picks one
  per request (no API credentials needed in the pods); not-ready and terminating pods leave it.
- :func:`build_entry_service`: ``<router>``, the router's client port of every pod of the
  ZetaRouter, all tiers: the endpoint clients use.

The routers' admin port (health, metrics, hashed learning samples, drain) is on no Service:
the operator's learner reaches each router by its pod's IP, and Prometheus scrapes pods (the
chart's PodMonitor). A NetworkPolicy (``render.networkpolicy``) admits only scrapers and the
operator to it.
"""

from __future__ import annotations

from typing import Any

from zeta_router.api.models import TierSpec, ZetaRouterSpec
from zeta_router.render import names
from zeta_router.render.deployment import MODEL_PORT_NAME, ROUTER_PORT_NAME


def build_tier_service(name: str, tier: TierSpec, spec: ZetaRouterSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.tier_object_name(name, tier.name),
            "labels": names.labels(name, "model-server", tier.name),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": names.tier_selector(name, tier.name),
            "ports": [
                {
                    "name": "http",
                    "port": tier.port,
                    "targetPort": MODEL_PORT_NAME,
                    "protocol": "TCP",
                },
            ],
        },
    }


def build_tier_replicas_service(name: str, tier: TierSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.tier_replicas_service_name(name, tier.name),
            "labels": names.labels(name, "replicas", tier.name),
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": names.tier_selector(name, tier.name),
            "ports": [
                {
                    "name": "http",
                    "port": tier.port,
                    "targetPort": MODEL_PORT_NAME,
                    "protocol": "TCP",
                },
            ],
        },
    }


def build_entry_service(name: str, spec: ZetaRouterSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": names.entry_service_name(name),
            "labels": names.labels(name, "router"),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": names.router_selector(name),
            "ports": [
                {
                    "name": "http",
                    "port": spec.router.port,
                    "targetPort": ROUTER_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
