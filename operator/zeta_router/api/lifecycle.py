"""How a ZetaRouter pod stops without losing a request: the contract between the pods the
operator renders and the router sidecar in them.

When a pod is deleted (scale-down, rollout, node drain), the endpoints controller removes it
from its Services at once, but every node's kube-proxy (and every router that sends requests to
a tier's Service) learns that only later: a second on a quiet cluster, many seconds on a large
or loaded one. Until then new connections to the Services' ClusterIPs still reach the pod, and
a pod that stopped listening answers them with a reset (the client sees "connection refused").
How long that lasts cannot be known in advance, so the drain ends when the traffic has stopped,
not after a fixed delay. The kubelet runs each container's ``preStop`` hook, then sends it
SIGTERM, and kills it after the pod's grace period.

1. The router container's preStop is an HTTP GET of the router's :data:`ROUTER_DRAIN_PATH`
   (admin port), which asks the router to stop being ready (``/readyz``
   answers 503 and every response carries ``Connection: close``, so keep-alive clients open
   their next connection through a Service, which picks a pod that stays) and returns once the
   drain has ended (:func:`drain_ends_at`): at least ``spec.router.drainDelay`` has passed and
   no new connection or request has reached the router's client port for
   ``spec.router.drainQuietPeriod``, or ``spec.router.drainTimeout`` has passed. Until then the
   router accepts and serves whatever arrives, as it did before.
2. Then SIGTERM: the router stops accepting connections (nothing has arrived for the quiet
   period: no node sends it any more) and finishes the requests and streams in flight
   (``--drain-seconds``, the router's total request timeout); its admin port stays up until no
   model-server preStop waits on it, then it exits.
3. The model-server container's preStop is an HTTP GET of the router's :data:`MODEL_IDLE_PATH`
   (admin port), which answers once the router's drain has ended, its client requests in flight
   have finished, and the model server has held no request and done no work for
   ``spec.router.drainQuietPeriod`` (its own in-flight gauges and work counters: requests from
   this pod's router and from other pods' routers alike; those send to it directly, as a
   replica of its tier, until their name resolution drops it, seconds after the endpoint
   removal). Only then is the model server signalled.

The grace period covers all of it: :func:`termination_grace_seconds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

DRAIN_PATH: Final = "/drain"
"""POST, accepted from 127.0.0.1 only: start draining; answers once the drain has ended."""
ROUTER_DRAIN_PATH: Final = "/drain/router"
"""GET: the router container's preStop hook: start draining; answers once the drain has ended.
An HTTP hook rather than an exec of ``zeta-router drain``: the kubelet performs it itself, so it
needs nothing of the container's runtime. An exec hook joins the container's mount namespace,
and where the runtime could only ``chroot`` into the container's root (a node whose "/" is not
the mount namespace's root, e.g. one run inside a plain chroot), the joined process kept the
node's root, found no ``zeta-router`` there, and the router got SIGTERM with no drain at all:
new connections that kube-proxy still sent to the pod were refused."""
ROUTER_DRAIN_HOOK_PATH: Final = ROUTER_DRAIN_PATH.lstrip("/")
"""The path as the pod's ``httpGet`` hook names it (see :data:`MODEL_IDLE_HOOK_PATH`)."""
MODEL_IDLE_PATH: Final = "/drain/model-idle"
"""GET: starts the drain too, and answers once it has ended, the router's client requests have
finished and the pod's model server holds no request (or cannot be reached)."""
MODEL_IDLE_HOOK_PATH: Final = MODEL_IDLE_PATH.lstrip("/")
"""The path as a pod's ``httpGet`` hook names it: without its leading slash, because kubelets
before 1.23 put a slash of their own in front (``http://host:port/`` + path; measured on 1.20:
``//drain/model-idle`` answered 404 and the model server was stopped at once), and later ones
add the slash a path lacks."""
GRACE_MARGIN_SECONDS: Final = 15
"""Time left for the processes to exit once their requests are done."""


@dataclass(frozen=True)
class DrainTiming:
    """When a stopping pod's router may stop accepting (``spec.router.drain*``, in seconds)."""

    delay: float
    """At least this long after the drain began (traffic too sparse to tell when it stopped)."""
    quiet: float
    """No new connection or request for this long."""
    timeout: float
    """At most this long after the drain began, whatever still arrives."""


def drain_ends_at(began: float, last_arrival: float, timing: DrainTiming) -> float:
    """The time (same clock as the arguments) at which a drain that began at ``began`` ends,
    if nothing arrives after ``last_arrival`` (a connection or a request on the client port;
    anything before ``began`` counts as ``began``)."""
    quiet_from = max(began, last_arrival)
    return min(began + timing.timeout, max(began + timing.delay, quiet_from + timing.quiet))


def termination_grace_seconds(drain_timeout_seconds: float, total_timeout_seconds: float) -> int:
    """The pod's ``terminationGracePeriodSeconds``: the longest drain, then the longest request
    (the routers' total timeout) can still finish, then a margin to exit."""
    return math.ceil(drain_timeout_seconds + total_timeout_seconds) + GRACE_MARGIN_SECONDS
