"""The operator's settings, from its command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zeta_router.api.pod_policy import PodPolicy

FINALIZER_PREFIX = "zeta.ai"
DEFAULT_PEERING = "zeta-router"


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    drift_interval: float = 30.0
    liveness: str | None = "http://127.0.0.1:8080/healthz"
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = 9090
    peering_name: str = DEFAULT_PEERING
    priority: int | None = None  # None: picked at random (see cli)
    standalone: bool = False
    log_format: str = "json"
    verbose: bool = False
    workers: int = 8
    kubeconfig: str | None = None
    router_image: str = ""
    network_policy: bool = False
    metrics_from: tuple[dict[str, Any], ...] = ()
    operator_from: tuple[dict[str, Any], ...] = ()
    pod_policy: PodPolicy = field(default_factory=PodPolicy)
    # Settings of handlers registered by other modules (see controller.handlers), by name.
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def clusterwide(self) -> bool:
        return self.all_namespaces or not self.namespaces
