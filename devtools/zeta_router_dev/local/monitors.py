"""Prometheus scrape configs from the chart's ``PodMonitor`` and ``ServiceMonitor`` objects, the
way the Prometheus Operator generates them: Kubernetes service discovery against the apiserver
(``role: pod`` for a PodMonitor, ``role: endpoints`` for a ServiceMonitor), ``keep`` rules for
the selector's labels and the endpoint's port, the standard target labels (``namespace``,
``pod``, ``container``, ``service``, ``job``, ``endpoint``), ``podTargetLabels`` and
``targetLabels`` copied with their names sanitized (``app.kubernetes.io/instance`` ->
``app_kubernetes_io_instance``), then the endpoint's own ``relabelings``.

A local Prometheus configured with :func:`scrape_configs` finds and labels pods exactly as the
chart's monitors tell a Prometheus Operator to, so the control loop's queries (the label
contract of ``zeta_router.autoscale.metrics``) are tested against what the chart ships, not
against a list written again by hand. Pure: the monitors in, the config out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MONITOR_KINDS = ("PodMonitor", "ServiceMonitor")

# camelCase fields of a Prometheus Operator RelabelConfig -> Prometheus' snake_case.
_RELABEL_FIELDS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}


@dataclass(frozen=True)
class ApiAccess:
    """How Prometheus reaches the apiserver for service discovery."""

    server: str
    ca_file: str
    bearer_token_file: str


def sanitize(name: str) -> str:
    """A Kubernetes label name as a Prometheus label name."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def relabeling(config: Mapping[str, Any]) -> dict[str, Any]:
    """A monitor's RelabelConfig (camelCase) as a Prometheus relabel config."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in _RELABEL_FIELDS:
            out[_RELABEL_FIELDS[key]] = value
    if "action" in out:
        out["action"] = str(out["action"]).lower()
    return out


def _sd_config(role: str, namespaces: Sequence[str] | None, api: ApiAccess) -> dict[str, Any]:
    sd: dict[str, Any] = {
        "role": role,
        "api_server": api.server,
        "tls_config": {"ca_file": api.ca_file},
        "bearer_token_file": api.bearer_token_file,
    }
    if namespaces:
        sd["namespaces"] = {"names": list(namespaces)}
    return sd


def _namespaces(monitor: Mapping[str, Any]) -> list[str] | None:
    """None: any namespace. The monitor's own namespace when the selector is empty, as the
    Prometheus Operator does."""
    spec = monitor.get("spec") or {}
    selector = spec.get("namespaceSelector") or {}
    if selector.get("any"):
        return None
    names = selector.get("matchNames")
    if names:
        return [str(n) for n in names]
    return [str((monitor.get("metadata") or {}).get("namespace", "default"))]


def _selector_keep(match_labels: Mapping[str, str], meta: str) -> list[dict[str, Any]]:
    rules = []
    for key, value in sorted(match_labels.items()):
        name = sanitize(key)
        rules.append(
            {
                "action": "keep",
                "source_labels": [f"{meta}_label_{name}", f"{meta}_labelpresent_{name}"],
                "regex": f"({re.escape(str(value))});true",
            }
        )
    return rules


def _copy_labels(labels: Iterable[str], meta: str) -> list[dict[str, Any]]:
    return [
        {
            "source_labels": [f"{meta}_label_{sanitize(label)}"],
            "target_label": sanitize(label),
            "regex": "(.+)",
            "replacement": "${1}",
        }
        for label in labels
    ]


def _job(kind: str, monitor: Mapping[str, Any], index: int) -> str:
    meta = monitor.get("metadata") or {}
    short = "podMonitor" if kind == "PodMonitor" else "serviceMonitor"
    return f"{short}/{meta.get('namespace', 'default')}/{meta.get('name')}/{index}"


def pod_monitor_configs(
    monitor: Mapping[str, Any], api: ApiAccess, interval: str | None = None
) -> list[dict[str, Any]]:
    spec = monitor.get("spec") or {}
    meta = monitor.get("metadata") or {}
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    out = []
    for i, endpoint in enumerate(spec.get("podMetricsEndpoints") or []):
        port = str(endpoint.get("port", ""))
        rules: list[dict[str, Any]] = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
            *_selector_keep(match, "__meta_kubernetes_pod"),
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": re.escape(port),
            },
            {
                "action": "drop",
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "(Failed|Succeeded)",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            *_copy_labels(spec.get("podTargetLabels") or [], "__meta_kubernetes_pod"),
            {"target_label": "job", "replacement": f"{meta.get('namespace')}/{meta.get('name')}"},
            {"target_label": "endpoint", "replacement": port},
            *(relabeling(r) for r in endpoint.get("relabelings") or []),
        ]
        out.append(
            {
                "job_name": _job("PodMonitor", monitor, i),
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "kubernetes_sd_configs": [_sd_config("pod", _namespaces(monitor), api)],
                "scrape_interval": interval or endpoint.get("interval") or "30s",
                "metrics_path": endpoint.get("path") or "/metrics",
                "scheme": endpoint.get("scheme") or "http",
                "relabel_configs": rules,
            }
        )
    return out


def service_monitor_configs(
    monitor: Mapping[str, Any], api: ApiAccess, interval: str | None = None
) -> list[dict[str, Any]]:
    spec = monitor.get("spec") or {}
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    out = []
    for i, endpoint in enumerate(spec.get("endpoints") or []):
        port = str(endpoint.get("port", ""))
        job_label = spec.get("jobLabel")
        rules: list[dict[str, Any]] = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
            *_selector_keep(match, "__meta_kubernetes_service"),
            {
                "action": "keep",
                "source_labels": ["__meta_kubernetes_endpoint_port_name"],
                "regex": re.escape(port),
            },
            {
                "source_labels": [
                    "__meta_kubernetes_endpoint_address_target_kind",
                    "__meta_kubernetes_endpoint_address_target_name",
                ],
                "separator": ";",
                "regex": "Node;(.*)",
                "replacement": "${1}",
                "target_label": "node",
            },
            {
                "source_labels": [
                    "__meta_kubernetes_endpoint_address_target_kind",
                    "__meta_kubernetes_endpoint_address_target_name",
                ],
                "separator": ";",
                "regex": "Pod;(.*)",
                "replacement": "${1}",
                "target_label": "pod",
            },
            {
                "action": "drop",
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "(Failed|Succeeded)",
            },
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {
                "source_labels": ["__meta_kubernetes_pod_container_name"],
                "target_label": "container",
            },
            *_copy_labels(spec.get("targetLabels") or [], "__meta_kubernetes_service"),
            *_copy_labels(spec.get("podTargetLabels") or [], "__meta_kubernetes_pod"),
            {
                "source_labels": [
                    f"__meta_kubernetes_service_label_{sanitize(job_label)}"
                    if job_label
                    else "__meta_kubernetes_service_name"
                ],
                "target_label": "job",
                "replacement": "${1}",
            },
            {"target_label": "endpoint", "replacement": port},
            *(relabeling(r) for r in endpoint.get("relabelings") or []),
        ]
        out.append(
            {
                "job_name": _job("ServiceMonitor", monitor, i),
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "kubernetes_sd_configs": [_sd_config("endpoints", _namespaces(monitor), api)],
                "scrape_interval": interval or endpoint.get("interval") or "30s",
                "metrics_path": endpoint.get("path") or "/metrics",
                "scheme": endpoint.get("scheme") or "http",
                "relabel_configs": rules,
            }
        )
    return out


def scrape_configs(
    objects: Iterable[Mapping[str, Any]], api: ApiAccess, interval: str | None = None
) -> list[dict[str, Any]]:
    """Scrape configs for every PodMonitor and ServiceMonitor among ``objects`` (other kinds
    are ignored). ``interval`` overrides the monitors' own."""
    out: list[dict[str, Any]] = []
    for obj in objects:
        kind = obj.get("kind")
        if kind == "PodMonitor":
            out += pod_monitor_configs(obj, api, interval)
        elif kind == "ServiceMonitor":
            out += service_monitor_configs(obj, api, interval)
    return out


def monitors_in(objects: Iterable[Mapping[str, Any] | None]) -> list[Mapping[str, Any]]:
    return [o for o in objects if o and o.get("kind") in MONITOR_KINDS]
