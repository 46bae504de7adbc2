"""How a ZetaRouter pod stops without losing a request: the contract between the pods the
operator renders and the router sidecar in them.

When a pod is deleted (scale-down, rollout, node drain), the endpoints controller removes it
from its Services at once, but every node's kube-proxy (and every router that sends requests to
a tier's Service) learns that only a little later. The kubelet runs each container's ``preStop``
hook, then sends it SIGTERM, and kills it after the pod's grace period.

1. The router container's preStop runs ``zeta-router drain``, which asks the router (on its
   admin port, over 127.0.0.1, so from inside the pod only) to stop being ready (``/readyz``
   answers 503 and responses carry ``Connection: close``, so clients stop reusing their
   connections to it) and returns after the drain delay (``spec.router.drainDelay``), while the
   router keeps serving whatever still arrives.
2. Then SIGTERM: the router stops accepting connections and finishes the requests and streams
   in flight (``--drain-seconds``, the router's total request timeout); its admin port stays
   up until no model-server preStop waits on it, then it exits.
3. The model-server container's preStop is an HTTP GET of the router's :data:`MODEL_IDLE_PATH`
   (admin port), which answers once the drain delay has passed and the model server holds no
   request any more (its own in-flight gauges: requests from this pod's router and from other
   pods' routers through the tier Service alike). Only then is the model server signalled.

The grace period covers all of it: :func:`termination_grace_seconds`.
"""

from __future__ import annotations

import math
from typing import Final

DRAIN_PATH: Final = "/drain"
"""POST, accepted from 127.0.0.1 only: start draining; answers after the drain delay."""
MODEL_IDLE_PATH: Final = "/drain/model-idle"
"""GET: answers after the drain delay, once the pod's model server holds no request (or cannot
be reached); waits at most the router's total request timeout."""
MODEL_IDLE_HOOK_PATH: Final = MODEL_IDLE_PATH.lstrip("/")
"""The path as a pod's ``httpGet`` hook names it: without its leading slash, because kubelets
before 1.23 put a slash of their own in front (``http://host:port/`` + path; measured on 1.20:
``//drain/model-idle`` answered 404 and the model server was stopped at once), and later ones
add the slash a path lacks."""
GRACE_MARGIN_SECONDS: Final = 15
"""Time left for the processes to exit once their requests are done."""


def termination_grace_seconds(drain_delay_seconds: float, total_timeout_seconds: float) -> int:
    """The pod's ``terminationGracePeriodSeconds``: the drain delay, then the longest request
    (the routers' total timeout) can still finish, then a margin to exit."""
    return math.ceil(drain_delay_seconds + total_timeout_seconds) + GRACE_MARGIN_SECONDS
