"""Every metric zeta-router exports, read from the prometheus_client objects that export them.

The Grafana dashboard (``charts/zeta-router/dashboards/``) and the metrics reference in
docs/install.md may only name these; tests check both against this module.

- the router sidecar: the metrics of :class:`zeta_router.router.metrics.RouterMetrics`;
- the operator: the ``zeta_operator_*`` metrics its modules define (reconciliations, and the
  control loop's decisions);
- the model servers: the engine metrics the control loop reads
  (:data:`zeta_router.api.engines.ENGINE_METRICS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics import MetricWrapperBase

OPERATOR_PREFIX = "zeta_operator_"
# The modules that define the operator's metrics.
OPERATOR_METRIC_MODULES = ("zeta_router.controller.reconcile", "zeta_router.autoscale.loop")

_SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


@dataclass(frozen=True)
class MetricFamily:
    name: str
    """As exposed in the text format: counters with their ``_total``."""
    type: str
    """counter, gauge, histogram, summary; ``untyped`` for the engines' series."""
    labels: tuple[str, ...]
    help: str
    source: str
    """``router``, ``operator``, or the engine (``vllm``, ``llamacpp``)."""

    @property
    def series(self) -> tuple[str, ...]:
        """The sample names this family exposes (what a query can select)."""
        return tuple(self.name + s for s in _SUFFIXES.get(self.type, ("",)))


def _family(metric: MetricWrapperBase, source: str) -> MetricFamily:
    name = str(metric._name)
    kind = str(metric._type)
    if kind == "counter":
        name += "_total"
    return MetricFamily(name, kind, tuple(metric._labelnames), str(metric._documentation), source)


def _families(objects: Iterable[object], source: str, prefix: str) -> list[MetricFamily]:
    out: dict[str, MetricFamily] = {}
    for obj in objects:
        if isinstance(obj, MetricWrapperBase) and str(obj._name).startswith(prefix):
            fam = _family(obj, source)
            out[fam.name] = fam
    return list(out.values())


def router_metrics() -> list[MetricFamily]:
    from zeta_router.router.metrics import RouterMetrics

    return _families(vars(RouterMetrics()).values(), "router", "zeta_router_")


def operator_metrics() -> list[MetricFamily]:
    objects: list[object] = []
    for module in OPERATOR_METRIC_MODULES:
        objects += vars(importlib.import_module(module)).values()
    return _families(objects, "operator", OPERATOR_PREFIX)


def engine_metrics() -> list[MetricFamily]:
    from zeta_router.api.engines import ENGINE_METRICS

    return [
        MetricFamily(name, "untyped", (), "", engine)
        for engine, names in ENGINE_METRICS.items()
        for name in names
    ]


def exported_series() -> set[str]:
    """Every sample name a dashboard query may select."""
    names: set[str] = set()
    for fam in router_metrics() + operator_metrics() + engine_metrics():
        names.update(fam.series)
    return names
