"""Which routers a ZetaRouter has, and reading their samples and labels.

Every pod of a ZetaRouter runs a router sidecar; each keeps the samples of the requests it
answered and the labels it received (``router.learning``). The operator lists the ZetaRouter's
pods (read-only: ``list pods`` in its namespaces) and asks each router's admin port for the
records after the last one it has (``GET /learning/samples?after=N``), a page at a time.

Which pods and admin addresses (and ``$ZETA_ROUTER_ROUTER_ADDRESSES`` for runs outside the
cluster network) is :mod:`zeta_router.controller.routers`, shared with the wake daemon and
re-exported here.
"""

from __future__ import annotations

import json
import logging

from zeta_router.bounded_http import FetchError
from zeta_router.bounded_http import fetch as bounded_fetch
from zeta_router.controller.routers import (
    ADDRESSES_ENV,
    RouterEndpoint,
    address_map,
    endpoints,
    list_routers,
)
from zeta_router.scoring.samples import PAGE, Batch, WireError

log = logging.getLogger(__name__)

__all__ = [
    "ADDRESSES_ENV",
    "CollectError",
    "RouterEndpoint",
    "address_map",
    "endpoints",
    "fetch",
    "list_routers",
]

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
