"""A small typed JSON client for the Kubernetes API.

It reuses the `kubernetes` package for what that package does well (reading kubeconfigs,
in-cluster credentials, token refresh, TLS, connection pooling) and speaks plain JSON dicts
otherwise: child objects come from pure ``build_*`` functions as dicts, and the generated
model classes would only convert them back and forth (and validate every call, which costs
CPU in an operator that reconciles hundreds of objects).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
"""Server-side apply (JSON is YAML, so the body is sent as JSON)."""
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
"""Accept header asking for an object's metadata only (its data never leaves the apiserver)."""


class ApiError(Exception):
    """A non-2xx answer from the apiserver, with its Status ``reason`` and ``message``."""

    def __init__(self, status: int, reason: str, message: str, body: JSON | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def api_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """``/api/v1/namespaces/ns/pods/x/status`` and the like."""
    parts = ["/api/v1" if api_version == "v1" else f"/apis/{api_version}"]
    if namespace is not None:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(plural)
    if name is not None:
        parts.append(quote(name, safe=""))
        if subresource is not None:
            parts.append(subresource)
    return "/".join(parts)


def load_api_client(kubeconfig: str | os.PathLike[str] | None = None) -> Any:
    """A ``kubernetes.client.ApiClient`` from ``kubeconfig``, ``$KUBECONFIG``,
    ``~/.kube/config``, or the in-cluster service account, in that order."""
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path is None and (Path.home() / ".kube" / "config").exists():
        path = str(Path.home() / ".kube" / "config")
    if path is not None:
        # A KUBECONFIG list names several files; the loader merges them.
        return config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
    config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class Kube:
    """Thread-safe (the underlying urllib3 pool is)."""

    def __init__(self, api_client: Any, timeout: float = 30.0) -> None:
        self.api_client = api_client
        self.timeout = timeout

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | os.PathLike[str] | None = None) -> Kube:
        return cls(load_api_client(kubeconfig))

    @property
    def server(self) -> str:
        host: str = self.api_client.configuration.host
        return host

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str | None,
        timeout: float | tuple[float, float] | None,
        accept: str = "application/json",
    ) -> Any:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        params = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None]
        _method, url, headers, body, _post = self.api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api_client.call_api(
            method,
            url,
            header_params=headers,
            body=body,
            _request_timeout=timeout if timeout is not None else self.timeout,
        )
        if not 200 <= int(resp.status) < 300:
            raw = resp.read()
            try:
                status = json.loads(raw)
            except ValueError:
                status = {"message": raw.decode(errors="replace")[:500]}
            raise ApiError(
                int(resp.status),
                str(status.get("reason") or resp.reason or ""),
                str(status.get("message") or ""),
                status if isinstance(status, dict) else None,
            )
        return resp

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float | None = None,
        accept: str = "application/json",
    ) -> JSON:
        resp = self._send(method, path, query, body, content_type, timeout, accept)
        raw = resp.read()
        result: JSON = json.loads(raw) if raw else {}
        return result

    # ---- verbs --------------------------------------------------------------------------------

    def get(self, path: str, **query: Any) -> JSON:
        return self.request("GET", path, query)

    def get_or_none(self, path: str) -> JSON | None:
        try:
            return self.get(path)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    def get_metadata(self, path: str) -> JSON:
        """The object's ``metadata`` only (a ``PartialObjectMetadata``): for deciding whether
        to read an object at all, e.g. a Secret, without receiving its data."""
        return self.request("GET", path, accept=METADATA_ONLY)

    def list(self, path: str, label_selector: str | None = None, **query: Any) -> JSON:
        return self.request("GET", path, {"labelSelector": label_selector, **query})

    def create(self, path: str, body: Mapping[str, Any], **query: Any) -> JSON:
        return self.request("POST", path, query, dict(body))

    def replace(self, path: str, body: Mapping[str, Any]) -> JSON:
        return self.request("PUT", path, None, dict(body))

    def patch(self, path: str, body: Any, content_type: str = MERGE_PATCH, **query: Any) -> JSON:
        return self.request("PATCH", path, query, body, content_type)

    def apply(
        self, path: str, body: Mapping[str, Any], field_manager: str, force: bool = True
    ) -> JSON:
        """Server-side apply of ``body`` (the whole intent of ``field_manager`` for this object)
        at ``path`` (the object's own path: apply creates it when missing). ``force`` takes
        over fields another manager set to another value, which is what a controller repairing
        drift wants."""
        query = {"fieldManager": field_manager, "force": force}
        return self.request("PATCH", path, query, dict(body), APPLY_PATCH)

    def delete(self, path: str, body: Mapping[str, Any] | None = None, **query: Any) -> JSON:
        return self.request("DELETE", path, query, dict(body) if body is not None else None)

    def watch(
        self,
        path: str,
        resource_version: str | None = None,
        label_selector: str | None = None,
        timeout_seconds: int = 120,
    ) -> Iterator[tuple[str, JSON]]:
        """Yields ``(type, object)`` until the server ends the watch (after about
        ``timeout_seconds``). An ``ERROR`` event (e.g. 410 Gone) is raised as :class:`ApiError`:
        the caller lists again."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "labelSelector": label_selector,
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": "true",
        }
        resp = self._send("GET", path, query, None, None, (10.0, timeout_seconds + 30.0))
        stream = resp.response
        buf = b""
        try:
            for chunk in stream.stream(16384, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = str(event.get("type"))
                    obj: JSON = event.get("object") or {}
                    if kind == "ERROR":
                        raise ApiError(
                            int(obj.get("code") or 500),
                            str(obj.get("reason") or ""),
                            str(obj.get("message") or ""),
                            obj,
                        )
                    yield kind, obj
        finally:
            # A watch ended early still has unread data on its connection: drop that connection
            # instead of handing it back to the pool.
            stream.close()
            stream.release_conn()


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
