"""Kubernetes service discovery for a Prometheus built without it.

Debian's ``prometheus`` package is built without ``kubernetes_sd_configs`` (its Kubernetes client
libraries are not packaged), but it has ``http_sd_configs``. This module serves, over HTTP SD,
the target groups Prometheus' own Kubernetes discovery builds for the roles ``pod`` and
``endpoints`` (``discovery/kubernetes/pod.go`` and ``endpoints.go``): one target per container
port (pod role) or per endpoint address and port (endpoints role), with the same
``__meta_kubernetes_*`` labels. The scrape configs generated from the chart's monitors
(``monitors.scrape_configs``) then run their relabelling unchanged: :func:`via_http_sd` only
swaps each ``kubernetes_sd_configs`` entry for an ``http_sd_configs`` entry pointing here.

The target builders are pure; :class:`KubeSdServer` lists from the apiserver on each request (with
the credentials Prometheus' own discovery would have) and answers on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from zeta_router.kube import Kube, api_path

META = "__meta_kubernetes_"


def _name(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _join(host: str, port: int | str | None = None) -> str:
    if port is None:
        return f"[{host}]" if ":" in host else host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _object_labels(prefix: str, meta: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (meta.get("labels") or {}).items():
        out[f"{META}{prefix}_label_{_name(key)}"] = str(value)
        out[f"{META}{prefix}_labelpresent_{_name(key)}"] = "true"
    for key, value in (meta.get("annotations") or {}).items():
        out[f"{META}{prefix}_annotation_{_name(key)}"] = str(value)
        out[f"{META}{prefix}_annotationpresent_{_name(key)}"] = "true"
    return out


def _pod_ready(pod: Mapping[str, Any]) -> str:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status", "unknown")).lower()
    return "unknown"


def pod_labels(pod: Mapping[str, Any]) -> dict[str, str]:
    """The labels every target of a pod carries (``podLabels`` in pod.go)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    out = {
        f"{META}pod_name": str(meta.get("name", "")),
        f"{META}pod_ip": str(status.get("podIP", "")),
        f"{META}pod_ready": _pod_ready(pod),
        f"{META}pod_phase": str(status.get("phase", "")),
        f"{META}pod_node_name": str(spec.get("nodeName", "")),
        f"{META}pod_host_ip": str(status.get("hostIP", "")),
        f"{META}pod_uid": str(meta.get("uid", "")),
    }
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            out[f"{META}pod_controller_kind"] = str(ref.get("kind", ""))
            out[f"{META}pod_controller_name"] = str(ref.get("name", ""))
    out.update(_object_labels("pod", meta))
    return out


def _container_labels(c: Mapping[str, Any], init: bool) -> dict[str, str]:
    return {
        f"{META}pod_container_name": str(c.get("name", "")),
        f"{META}pod_container_image": str(c.get("image", "")),
        f"{META}pod_container_init": "true" if init else "false",
    }


def _port_labels(port: Mapping[str, Any]) -> dict[str, str]:
    return {
        f"{META}pod_container_port_name": str(port.get("name", "")),
        f"{META}pod_container_port_number": str(port.get("containerPort", "")),
        f"{META}pod_container_port_protocol": str(port.get("protocol", "TCP")),
    }


def pod_target_groups(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Role ``pod``: a group per pod with an address; a target per container port, and one per
    container without ports (address = the pod IP)."""
    groups = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        spec = pod.get("spec") or {}
        meta = pod.get("metadata") or {}
        targets: list[tuple[str, dict[str, str]]] = []
        for init, key in ((False, "containers"), (True, "initContainers")):
            for c in spec.get(key) or []:
                ports = c.get("ports") or []
                if not ports:
                    targets.append((_join(ip), _container_labels(c, init)))
                for port in ports:
                    labels = {**_container_labels(c, init), **_port_labels(port)}
                    targets.append((_join(ip, port.get("containerPort")), labels))
        common = {f"{META}namespace": str(meta.get("namespace", "")), **pod_labels(pod)}
        for address, labels in targets:
            groups.append({"targets": [address], "labels": {**common, **labels}})
    return groups


def endpoints_target_groups(
    endpoints: Iterable[Mapping[str, Any]],
    services: Mapping[tuple[str, str], Mapping[str, Any]],
    pods: Mapping[tuple[str, str], Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Role ``endpoints``: a target per address (ready or not) and port of each Endpoints
    object, with its Service's labels, and the pod's and container's labels when the address
    belongs to a pod."""
    groups = []
    for ep in endpoints:
        meta = ep.get("metadata") or {}
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        common = {
            f"{META}namespace": ns,
            f"{META}endpoints_name": name,
            **_object_labels("endpoints", meta),
        }
        svc = services.get((ns, name))
        if svc is not None:
            common[f"{META}service_name"] = name
            common.update(_object_labels("service", svc.get("metadata") or {}))
        for subset in ep.get("subsets") or []:
            for ready, key in (("true", "addresses"), ("false", "notReadyAddresses")):
                for addr in subset.get(key) or []:
                    for port in subset.get("ports") or []:
                        groups.append(
                            {
                                "targets": [_join(str(addr["ip"]), port.get("port"))],
                                "labels": {
                                    **common,
                                    **_address_labels(addr, port, ready, ns, pods),
                                },
                            }
                        )
    return groups


def _address_labels(
    addr: Mapping[str, Any],
    port: Mapping[str, Any],
    ready: str,
    namespace: str,
    pods: Mapping[tuple[str, str], Mapping[str, Any]],
) -> dict[str, str]:
    out = {
        f"{META}endpoint_port_name": str(port.get("name", "")),
        f"{META}endpoint_port_protocol": str(port.get("protocol", "TCP")),
        f"{META}endpoint_ready": ready,
    }
    ref = addr.get("targetRef") or {}
    if ref:
        out[f"{META}endpoint_address_target_kind"] = str(ref.get("kind", ""))
        out[f"{META}endpoint_address_target_name"] = str(ref.get("name", ""))
    if addr.get("nodeName"):
        out[f"{META}endpoint_node_name"] = str(addr["nodeName"])
    if addr.get("hostname"):
        out[f"{META}endpoint_hostname"] = str(addr["hostname"])
    pod = pods.get((namespace, str(ref.get("name", "")))) if ref.get("kind") == "Pod" else None
    if pod is None:
        return out
    out.update(pod_labels(pod))
    for c in (pod.get("spec") or {}).get("containers") or []:
        for cport in c.get("ports") or []:
            if cport.get("containerPort") == port.get("port"):
                out.update(_container_labels(c, False))
                out.update(_port_labels(cport))
                return out
    return out


def via_http_sd(
    jobs: Sequence[Mapping[str, Any]], base_url: str, refresh: str = "1s"
) -> list[dict[str, Any]]:
    """The same scrape jobs with each ``kubernetes_sd_configs`` entry served by
    :class:`KubeSdServer` at ``base_url`` instead (role and namespaces in the query)."""
    out = []
    for job in jobs:
        job = dict(job)
        sds = job.pop("kubernetes_sd_configs", None)
        if sds:
            entries = []
            for sd in sds:
                query: list[tuple[str, str]] = [("role", str(sd["role"]))]
                query += [("namespace", n) for n in (sd.get("namespaces") or {}).get("names", [])]
                entries.append(
                    {"url": f"{base_url}/sd?{urlencode(query)}", "refresh_interval": refresh}
                )
            job["http_sd_configs"] = entries
        out.append(job)
    return out


def discover(kube: Kube, role: str, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """Target groups of ``role`` in ``namespaces`` (all when empty), read from the apiserver."""

    def listed(plural: str) -> list[dict[str, Any]]:
        if not namespaces:
            items: list[dict[str, Any]] = kube.list(api_path("v1", plural))["items"]
            return items
        found: list[dict[str, Any]] = []
        for ns in namespaces:
            found += kube.list(api_path("v1", plural, ns))["items"]
        return found

    pods = listed("pods")
    if role == "pod":
        return pod_target_groups(pods)
    if role == "endpoints":
        services = {
            (s["metadata"]["namespace"], s["metadata"]["name"]): s for s in listed("services")
        }
        by_name = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        return endpoints_target_groups(listed("endpoints"), services, by_name)
    raise ValueError(f"unsupported role {role!r} (pod, endpoints)")


class KubeSdServer:
    """HTTP SD on 127.0.0.1: ``GET /sd?role=pod&namespace=a&namespace=b``."""

    def __init__(self, kube: Kube, host: str = "127.0.0.1", port: int = 0) -> None:
        self.kube = kube
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                try:
                    if url.path != "/sd":
                        raise ValueError("unknown path (use /sd?role=...)")
                    groups = discover(
                        outer.kube, query.get("role", [""])[0], query.get("namespace", [])
                    )
                    body, code = json.dumps(groups).encode(), 200
                except ValueError as e:
                    body, code = json.dumps({"error": str(e)}).encode(), 400
                except Exception as e:  # the apiserver is unreachable: Prometheus keeps the last
                    body, code = json.dumps({"error": str(e)}).encode(), 503
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    return  # Prometheus gave up on this refresh (or is stopping)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> KubeSdServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
