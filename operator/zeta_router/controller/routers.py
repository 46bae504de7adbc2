"""Which routers a ZetaRouter has, and where their admin ports are (the learner reads their
samples there, the wake daemon their counts of requests wanting a sleeping tier).

Every pod of a ZetaRouter runs a router sidecar. The operator lists the ZetaRouter's pods
(read-only: ``list pods`` in its namespaces) and reaches each router's admin port by pod IP.

Outside the cluster network (the operator run on a workstation, the end-to-end tests) pod
addresses are not reachable; the file named by ``$ZETA_ROUTER_ROUTER_ADDRESSES``, a JSON object
mapping a pod's IP to ``host:port``, tells where each pod's admin port is reachable instead.
With that variable set, a pod the file does not name is not contacted at all.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeta_router.kube import Kube, api_path
from zeta_router.render import names

log = logging.getLogger(__name__)

ADDRESSES_ENV = "ZETA_ROUTER_ROUTER_ADDRESSES"


@dataclass(frozen=True)
class RouterEndpoint:
    pod: str  # pod name (the router's identity for cursors)
    url: str  # base URL of its admin port


def address_map() -> dict[str, str] | None:
    """Pod IP -> ``host:port`` from ``$ZETA_ROUTER_ROUTER_ADDRESSES`` (None when unset);
    re-read each time, so a test can write it once pods exist."""
    path = os.environ.get(ADDRESSES_ENV)
    if not path:
        return None
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s=%s: %s", ADDRESSES_ENV, path, exc)
        return {}
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def endpoints(
    pods: list[Mapping[str, Any]], port: int, addresses: Mapping[str, str] | None
) -> list[RouterEndpoint]:
    """The routers of these pods: running ones with an address (pure). With ``addresses``,
    only the pods it names, at the address it gives."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not ip:
            continue
        if addresses is None:
            address = f"{ip}:{port}"
        elif str(ip) in addresses:
            address = addresses[str(ip)]
        else:
            continue
        out.append(RouterEndpoint(pod=str(meta.get("name")), url=f"http://{address}"))
    return sorted(out, key=lambda e: e.pod)


def list_routers(kube: Kube, namespace: str, router: str, port: int) -> list[RouterEndpoint]:
    selector = ",".join(f"{k}={v}" for k, v in names.router_selector(router).items())
    pods = kube.list(api_path("v1", "pods", namespace), selector).get("items") or []
    return endpoints(pods, port, address_map())
