"""The ZetaRouter the demo applies: the CPU sample (manifests/samples/zetarouter-cpu.yaml) with
both tiers serving SmolLM2-135M (the model the local llama.cpp servers load) and the control
loop on, reading the demo's Prometheus."""

from __future__ import annotations

from typing import Any

from zeta_router.api.models import API_VERSION, KIND
from zeta_router_dev.local.llama import DEFAULT_ALIAS

NAME = "chat-cpu"
NAMESPACE = "zeta-demo"
TIERS: tuple[str, ...] = ("small", "large")
# The cut points the loop may move each context's threshold within.
BOUNDS: dict[str, tuple[float, float]] = {
    "ZetaHRM": (0.3, 0.6),
    "ZetaTRM": (0.5, 0.8),
    "default": (0.4, 0.7),
}


def zetarouter(prometheus_url: str, interval_seconds: int = 2) -> dict[str, Any]:
    tier = {
        "engine": "llamacpp",
        "model": DEFAULT_ALIAS,
        "servedModelName": DEFAULT_ALIAS,
        "args": ["--ctx-size", "4096", "--threads", "1", "--parallel", "2"],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "tiers": [
                {**tier, "name": "small", "replicas": {"min": 1, "max": 3}, "costWeight": 1},
                {**tier, "name": "large", "replicas": {"min": 1, "max": 2}, "costWeight": 3},
            ],
            # contexts omitted: the built-in ZetaHRM (0.4), ZetaTRM (0.6) and default (0.5)
            "router": {},
            "autoscaling": {
                "enabled": True,
                "mode": "apply",
                "prometheus": {"url": prometheus_url, "timeout": "3s"},
                "interval": f"{interval_seconds}s",
                # llama.cpp on one CPU thread is slow to first token: scale on queues.
                "targets": {"queuePerReplica": 1, "ttftP90Seconds": 60},
                "scaleDownDelay": "20s",
            },
            "feedback": {
                "bounds": [{"context": c, "min": lo, "max": hi} for c, (lo, hi) in BOUNDS.items()]
            },
        },
    }
