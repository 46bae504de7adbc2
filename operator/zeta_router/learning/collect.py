"""Which routers a ZetaRouter has, and reading their samples and labels.

Every pod of a ZetaRouter runs a router sidecar; each keeps the samples of the requests it
answered and the labels it received (``router.learning``). The operator lists the ZetaRouter's
pods (read-only: ``list pods`` in its namespaces) and asks each router's admin port for the
records after the last one it has (``GET /learning/samples?after=N``), a page at a time.

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

from zeta_router.bounded_http import FetchError
from zeta_router.bounded_http import fetch as bounded_fetch
from zeta_router.kube import Kube, api_path
from zeta_router.render import names
from zeta_router.scoring.samples import PAGE, Batch, WireError

log = logging.getLogger(__name__)

ADDRESSES_ENV = "ZETA_ROUTER_ROUTER_ADDRESSES"
SAMPLES_PATH = "/learning/samples"
#: Pages read from one router per interval at most (the rest waits for the next interval).
MAX_PAGES = 50
#: One page's total deadline (connecting, headers and body together).
TIMEOUT_SECONDS = 10.0
#: Largest page read (a full page of long prompts' samples is a few MiB); a page past it is
#: asked again with fewer records (see ``LearningLoop``).
MAX_PAGE_BYTES = 16 * 1024 * 1024
#: A ZetaRouter's collection of one interval ends within this (the rest waits for the next).
COLLECT_BUDGET_SECONDS = 60.0


class CollectError(Exception):
    """A router could not be read (the message says which and why, in fixed words: nothing the
    router answered is repeated)."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


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


def fetch(
    endpoint: RouterEndpoint,
    after: int,
    limit: int = PAGE,
    *,
    deadline_seconds: float = TIMEOUT_SECONDS,
    max_bytes: int = MAX_PAGE_BYTES,
) -> tuple[Batch, list[str]]:
    """One page of a router's records after ``after``, bounded (``bounded_http``: no redirect,
    a total deadline, a size bound); raises :class:`CollectError`."""
    url = f"{endpoint.url}{SAMPLES_PATH}?after={after}&limit={limit}"
    try:
        answer = bounded_fetch(url, deadline_seconds=deadline_seconds, max_bytes=max_bytes)
        raw = json.loads(answer.body)
    except FetchError as exc:
        raise CollectError(
            f"{endpoint.pod}: {SAMPLES_PATH} {exc}", too_large=exc.kind == "too-large"
        ) from None
    except ValueError:
        raise CollectError(f"{endpoint.pod}: {SAMPLES_PATH} answered something not JSON") from None
    try:
        return Batch.from_wire(raw)
    except WireError as exc:
        raise CollectError(f"{endpoint.pod}: unusable answer from {SAMPLES_PATH}: {exc}") from None
