"""Defaults of the ZetaRouter API that are not a single literal value.

- Images per engine, and the router sidecar's image (the release's own).
- The built-in routing contexts a ZetaRouter gets when its spec lists none, and the threshold
  rule used for a context whose thresholds are not given.

The standalone router uses the same built-in contexts and threshold rule (it imports them from
here; this module stays free of heavy imports for that reason), so a ZetaRouter without contexts
routes exactly like ``zeta-router router --tier ... --tier ...``.
"""

from __future__ import annotations

import math
from typing import Final

from zeta_router import __version__

VLLM_IMAGE: Final = "vllm/vllm-openai:v0.30.0"
"""Model-server image for ``engine: vllm`` (its entrypoint is vLLM's OpenAI server): a released
tag, never a moving one. Its KV-cache gauge is ``vllm:kv_cache_usage_perc``; releases before
0.9 export ``vllm:gpu_cache_usage_perc`` instead, and the control loop reads either."""

LLAMACPP_IMAGE: Final = "ghcr.io/ggml-org/llama.cpp:server-b10760"
"""Model-server image for ``engine: llamacpp`` (its entrypoint is ``llama-server``): the server
image of llama.cpp release b10760, pinned (``:server`` alone moves with every build)."""

ROUTER_IMAGE: Final = f"zeta-router:{__version__}"
"""Router sidecar image: this release's image (entrypoint ``zeta-router``), the same one the
operator runs from; ``manifests/`` rewrites it with kustomize ``images:``."""

VLLM_PORT: Final = 8000
ROUTER_PORT: Final = 8080
ROUTER_ADMIN_PORT: Final = 8081
"""The router's /healthz, /readyz and /metrics: apart from the client API (entry Service)."""

PDB_MAX_UNAVAILABLE: Final = 1
"""A tier's PodDisruptionBudget by default: one pod at a time, never the last one."""

VLLM_CPU_PER_GPU: Final = 4
"""CPU request of a vLLM replica per GPU it uses, when the tier sets none: tokenisation, the
scheduler and the API server run on CPUs, and starving them slows every GPU of the replica."""
VLLM_MEMORY_PER_GPU_GI: Final = 16
"""Memory request (GiB) of a vLLM replica per GPU, when the tier sets none: weights pass through
host memory while loading, and CUDA graphs, the tokenizer and the API server live there."""

DRAIN_DELAY: Final = "5s"
"""The least time a stopping pod keeps serving, after it stopped being ready, before its router
stops accepting connections: what endpoint removal takes to reach every node when the pod sees
too little traffic to tell (see ``api.lifecycle``)."""
DRAIN_QUIET_PERIOD: Final = "5s"
"""A stopping pod's drain ends once no new connection or request has reached its router for this
long (and the drain delay has passed): then no node sends it traffic any more."""
DRAIN_TIMEOUT: Final = "60s"
"""The longest a stopping pod waits for its traffic to stop before its router stops accepting
anyway (a client that keeps one connection busy, or traffic that never stops arriving)."""

BUILTIN_CONTEXTS: Final[dict[str, float]] = {"ZetaHRM": 0.4, "ZetaTRM": 0.6, "default": 0.5}
"""Built-in contexts and their reference threshold for two tiers (the score from which a request
goes to the larger tier). ``ZetaHRM`` carries reasoning-heavy traffic and leans to the larger
tier, ``ZetaTRM`` high-volume mostly simple traffic and leans to the smaller one."""

BUILTIN_DEFAULT_CONTEXT: Final = "default"

OTHER_CONTEXT_REFERENCE: Final = 0.5
"""Reference threshold of a context that is not built in and lists no thresholds."""


def spread_thresholds(center: float, tiers: int, spacing: float = 1.0) -> list[float]:
    """Cut points for ``tiers`` tiers around one reference threshold.

    Two tiers get ``[center]``; more get points evenly spaced in logit space (``spacing`` apart)
    centred on ``center``, so they stay strictly increasing and inside (0, 1).
    """
    if tiers < 1:
        raise ValueError("at least one tier is needed")
    if not 0.0 < center < 1.0:
        raise ValueError(f"reference threshold {center} must be inside (0, 1)")
    n = tiers - 1
    if n == 0:
        return []
    mid = math.log(center / (1.0 - center))
    offsets = [(k - (n - 1) / 2.0) * spacing for k in range(n)]
    return [round(1.0 / (1.0 + math.exp(-(mid + o))), 6) for o in offsets]


def default_thresholds(context: str, tiers: int) -> list[float]:
    """Thresholds of a context whose spec gives none: its built-in reference (0.5 for contexts
    that are not built in), spread over the tier boundaries."""
    return spread_thresholds(BUILTIN_CONTEXTS.get(context, OTHER_CONTEXT_REFERENCE), tiers)


#: How long a tier with ``replicas.min: 0`` goes without requests before it sleeps at zero.
SLEEP_AFTER: Final = "10m"

#: How long a context with ``whenAsleep: wait`` holds a request for a waking tier.
WAKE_WAIT_SECONDS: Final = 60.0
