"""The NetworkPolicy ``<router>`` of a ZetaRouter's pods (pure), rendered when the operator runs
with ``--network-policy`` (the chart's ``networkPolicy.enabled``).

A model server's API has no authentication, and each tier's Service exposes it: without a
policy, any pod of the cluster could call the models directly, bypassing routing (and its cost
control). The policy admits, to the pods of this ZetaRouter:

- the router port (the OpenAI API clients use, through the entry Service), from anywhere;
- the model-server port, only from this ZetaRouter's own pods (their routers send each tier its
  requests) and from the metrics scrapers the operator was given (``--metrics-from``, the
  chart's ``networkPolicy.metricsFrom``: a model server's ``/metrics`` is on its API port);
- the routers' admin port (health and ``/metrics``), only from those scrapers and from the
  operator's own pods (``--operator-from``: its learner collects hashed samples there).

Traffic inside a pod (a router to its own model server over 127.0.0.1) is never filtered, and
neither are the kubelet's probes on most network plugins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zeta_router.render import names
from zeta_router.render.deployment import (
    MODEL_PORT_NAME,
    ROUTER_ADMIN_PORT_NAME,
    ROUTER_PORT_NAME,
)


def build_network_policy(
    name: str,
    scrapers: Sequence[Mapping[str, Any]] = (),
    operators: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The policy of ZetaRouter ``name``; ``scrapers``: NetworkPolicy peers (as in a
    NetworkPolicy's ``from``) that may read the model servers' metrics; ``operators``: peers of
    the operator's pods, which may reach the routers' admin port only."""
    pods = names.router_selector(name)
    model_port = [{"port": MODEL_PORT_NAME, "protocol": "TCP"}]
    ingress: list[dict[str, Any]] = [
        {"ports": [{"port": ROUTER_PORT_NAME, "protocol": "TCP"}]},
        {"from": [{"podSelector": {"matchLabels": dict(pods)}}], "ports": model_port},
    ]
    admin_port = {"port": ROUTER_ADMIN_PORT_NAME, "protocol": "TCP"}
    if scrapers:
        ingress.append({"from": [dict(p) for p in scrapers], "ports": [*model_port, admin_port]})
    if operators:
        ingress.append({"from": [dict(p) for p in operators], "ports": [admin_port]})
    return {
        "apiVersion": names.NETWORK_POLICY.api_version,
        "kind": names.NETWORK_POLICY.kind,
        "metadata": {
            "name": names.network_policy_name(name),
            "labels": names.labels(name, "model-server"),
        },
        "spec": {
            "podSelector": {"matchLabels": dict(pods)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
