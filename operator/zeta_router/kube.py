"""A small typed JSON client for the Kubernetes API, and the credentials it (and kopf) log in with.

Child objects come from pure ``get_*`` builders as dicts, so the client speaks plain JSON over
urllib3 (connection pooling, TLS) and needs no generated model classes. Credentials come from a
kubeconfig (``$KUBECONFIG``, ``~/.kube/config``: server, CA, client certificates, tokens, basic
auth, ``exec`` credential plugins) or from the in-cluster service account, read here once
(:func:`load_credentials`) and handed to kopf too, so the operator's two API clients always act
as the same identity.

Why not the ``kubernetes`` package: it is 130 MB of generated models the operator never uses,
and what this module needed from it (request serialisation) is not part of its public API.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
import yaml

JSON = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
"""Server-side apply (JSON is YAML, so the body is sent as JSON)."""
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
"""Accept header asking for an object's metadata only (its data never leaves the apiserver)."""

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Bound service-account tokens are rotated by the kubelet (hourly by default); re-reading the
# file this often keeps a long-running operator on a valid token without watching the file.
TOKEN_FILE_REREAD_SECONDS = 60.0


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


class CredentialsError(RuntimeError):
    """No usable credentials: the message says where they were looked for and what is wrong."""


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


# ---- credentials -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Where the apiserver is and how to prove who we are. PEM data, never paths, so that the
    same object serves urllib3 (through temporary files) and kopf (which takes data)."""

    server: str
    ca_data: bytes | None = None
    insecure: bool = False
    token: str | None = None
    token_file: Path | None = None
    username: str | None = None
    password: str | None = None
    certificate_data: bytes | None = None
    private_key_data: bytes | None = None
    default_namespace: str | None = None
    exec_config: Mapping[str, Any] | None = field(default=None, compare=False)
    source: str = ""

    def bearer_token(self) -> str | None:
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip()
            except OSError as e:
                raise CredentialsError(f"cannot read token file {self.token_file}: {e}") from e
        return self.token

    def resolved(self) -> Credentials:
        """With the kubeconfig's ``exec`` plugin run (a no-op without one)."""
        return run_exec_plugin(self) if self.exec_config else self

    def to_kopf(self) -> Any:
        """The same identity as a ``kopf.ConnectionInfo``, for the operator's login handler."""
        import kopf

        creds = self.resolved()
        token = creds.bearer_token()
        return kopf.ConnectionInfo(
            server=creds.server,
            ca_data=creds.ca_data,
            insecure=creds.insecure or None,
            username=creds.username,
            password=creds.password,
            scheme="Bearer" if token else None,
            token=token,
            certificate_data=creds.certificate_data,
            private_key_data=creds.private_key_data,
            default_namespace=creds.default_namespace,
        )


def load_credentials(kubeconfig: str | os.PathLike[str] | None = None) -> Credentials:
    """From ``kubeconfig``, else ``$KUBECONFIG`` (a list of files, merged first-wins as kubectl
    does), else ``~/.kube/config``, else the in-cluster service account."""
    if kubeconfig is not None:
        return credentials_from_kubeconfig([Path(kubeconfig)])
    env = os.environ.get("KUBECONFIG")
    if env:
        return credentials_from_kubeconfig([Path(p) for p in env.split(os.pathsep) if p])
    default = Path.home() / ".kube" / "config"
    if default.exists():
        return credentials_from_kubeconfig([default])
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return credentials_in_cluster()
    raise CredentialsError(
        "no Kubernetes credentials: pass --kubeconfig, set $KUBECONFIG, create ~/.kube/config, "
        "or run in a pod with a service account"
    )


def credentials_in_cluster(
    sa_dir: Path = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] | None = None
) -> Credentials:
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST")
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise CredentialsError("not in a pod: $KUBERNETES_SERVICE_HOST is not set")
    token_file = sa_dir / "token"
    if not token_file.is_file():
        raise CredentialsError(
            f"in a pod but {token_file} is missing: the pod's service-account token is not "
            "mounted (automountServiceAccountToken: false?)"
        )
    ns_file = sa_dir / "namespace"
    ca_file = sa_dir / "ca.crt"
    host = f"[{host}]" if ":" in host else host
    return Credentials(
        server=f"https://{host}:{port}",
        ca_data=ca_file.read_bytes() if ca_file.is_file() else None,
        token_file=token_file,
        default_namespace=ns_file.read_text().strip() if ns_file.is_file() else None,
        source=f"service account ({sa_dir})",
    )


def _merge_kubeconfigs(paths: Sequence[Path]) -> tuple[JSON, dict[str, Path]]:
    """kubectl's merge: the first file to set a value (or a named entry) wins. Returns the merged
    document and, per named entry, the file it came from (relative paths resolve against it)."""
    merged: JSON = {"clusters": {}, "users": {}, "contexts": {}}
    origin: dict[str, Path] = {}
    found = False
    for path in paths:
        if not path.exists():
            continue
        found = True
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise CredentialsError(f"cannot read kubeconfig {path}: {e}") from e
        if not isinstance(doc, dict):
            raise CredentialsError(f"kubeconfig {path} is not a mapping")
        if "current-context" in doc and "current-context" not in merged:
            merged["current-context"] = doc["current-context"]
        for kind in ("clusters", "users", "contexts"):
            for entry in doc.get(kind) or []:
                if not isinstance(entry, dict) or "name" not in entry:
                    continue
                key = f"{kind}/{entry['name']}"
                if entry["name"] not in merged[kind]:
                    merged[kind][entry["name"]] = entry.get(kind[:-1]) or {}
                    origin[key] = path.parent
    if not found:
        raise CredentialsError(f"kubeconfig not found: {', '.join(str(p) for p in paths)}")
    return merged, origin


def _file_or_data(entry: Mapping[str, Any], key: str, base: Path) -> bytes | None:
    data = entry.get(f"{key}-data")
    if data:
        return base64.b64decode(data)
    path = entry.get(key)
    if path:
        p = Path(os.path.expanduser(str(path)))
        p = p if p.is_absolute() else base / p
        try:
            return p.read_bytes()
        except OSError as e:
            raise CredentialsError(f"kubeconfig names {key} {p}, which cannot be read: {e}") from e
    return None


def credentials_from_kubeconfig(paths: Sequence[Path], context: str | None = None) -> Credentials:
    merged, origin = _merge_kubeconfigs(paths)
    where = ", ".join(str(p) for p in paths)
    ctx_name = context or merged.get("current-context")
    if not ctx_name:
        raise CredentialsError(f"kubeconfig {where} has no current-context")
    ctx = merged["contexts"].get(ctx_name)
    if ctx is None:
        raise CredentialsError(f"kubeconfig {where}: context {ctx_name!r} is not defined")
    cluster = merged["clusters"].get(ctx.get("cluster"))
    if cluster is None or not cluster.get("server"):
        raise CredentialsError(
            f"kubeconfig {where}: context {ctx_name!r} names cluster {ctx.get('cluster')!r}, "
            "which is not defined or has no server"
        )
    user = merged["users"].get(ctx.get("user"), {}) if ctx.get("user") else {}
    cbase = origin.get(f"clusters/{ctx.get('cluster')}", Path.cwd())
    ubase = origin.get(f"users/{ctx.get('user')}", Path.cwd())
    token_file = user.get("tokenFile")
    return Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_data=_file_or_data(cluster, "certificate-authority", cbase),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        token=user.get("token"),
        token_file=(ubase / Path(token_file)) if token_file else None,
        username=user.get("username"),
        password=user.get("password"),
        certificate_data=_file_or_data(user, "client-certificate", ubase),
        private_key_data=_file_or_data(user, "client-key", ubase),
        default_namespace=ctx.get("namespace"),
        exec_config=user.get("exec"),
        source=f"kubeconfig {where} (context {ctx_name})",
    )


def run_exec_plugin(creds: Credentials) -> Credentials:
    """Run the kubeconfig's ``exec`` credential plugin (client.authentication.k8s.io) and return
    the credentials with its token or client certificate."""
    cfg = creds.exec_config or {}
    command = cfg.get("command")
    if not command:
        return creds
    env = dict(os.environ)
    for item in cfg.get("env") or []:
        env[str(item["name"])] = str(item["value"])
    request = {
        "apiVersion": cfg.get("apiVersion", "client.authentication.k8s.io/v1beta1"),
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }
    env["KUBERNETES_EXEC_INFO"] = json.dumps(request)
    try:
        out = subprocess.run(
            [str(command), *map(str, cfg.get("args") or [])],
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        status = json.loads(out).get("status") or {}
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise CredentialsError(f"kubeconfig exec plugin {command!r} failed: {e}") from e
    return replace(
        creds,
        token=status.get("token") or creds.token,
        certificate_data=(status.get("clientCertificateData") or "").encode()
        or creds.certificate_data,
        private_key_data=(status.get("clientKeyData") or "").encode() or creds.private_key_data,
    )


def _ssl_context(creds: Credentials) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if creds.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif creds.ca_data:
        ctx.load_verify_locations(cadata=creds.ca_data.decode())
    if creds.certificate_data and creds.private_key_data:
        # The ssl module loads a client key pair only from files: write them to a private
        # temporary directory for the moment of loading.
        with tempfile.TemporaryDirectory(prefix="zeta-kube-") as d:
            cert, key = Path(d) / "tls.crt", Path(d) / "tls.key"
            cert.write_bytes(creds.certificate_data)
            key.touch(mode=0o600)
            key.write_bytes(creds.private_key_data)
            ctx.load_cert_chain(str(cert), str(key))
    return ctx


# ---- client ------------------------------------------------------------------------------------


class Kube:
    """Thread-safe (the urllib3 pool is)."""

    def __init__(self, credentials: Credentials, timeout: float = 30.0) -> None:
        credentials = credentials.resolved()
        self.credentials = credentials
        self.timeout = timeout
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_read = 0.0
        self._pool = urllib3.PoolManager(
            maxsize=16,
            ssl_context=_ssl_context(credentials),
            retries=False,
            # SSLContext carries the verification settings; urllib3 must not override them.
            assert_hostname=False if credentials.insecure else None,
            cert_reqs=ssl.CERT_NONE if credentials.insecure else ssl.CERT_REQUIRED,
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | os.PathLike[str] | None = None) -> Kube:
        return cls(load_credentials(kubeconfig))

    @property
    def server(self) -> str:
        return self.credentials.server

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        creds = self.credentials
        if creds.token_file is not None:
            with self._lock:
                now = time.monotonic()
                if self._token is None or now - self._token_read > TOKEN_FILE_REREAD_SECONDS:
                    self._token = creds.bearer_token()
                    self._token_read = now
                token = self._token
        else:
            token = creds.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif creds.username is not None:
            basic = base64.b64encode(f"{creds.username}:{creds.password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        return headers

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str | None,
        timeout: float | tuple[float, float] | None,
        accept: str = "application/json",
    ) -> urllib3.BaseHTTPResponse:
        headers = self._headers()
        headers["Accept"] = accept
        data: bytes | None = None
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        params = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None]
        url = self.server + path + (f"?{urlencode(params)}" if params else "")
        t = timeout if timeout is not None else self.timeout
        connect, read = t if isinstance(t, tuple) else (t, t)
        tm = urllib3.Timeout(connect=connect, read=read)
        resp = self._pool.request(
            method, url, body=data, headers=headers, timeout=tm, preload_content=False
        )
        if not 200 <= resp.status < 300:
            raw = resp.read()
            resp.release_conn()
            try:
                status = json.loads(raw)
            except ValueError:
                status = {"message": raw.decode(errors="replace")[:500]}
            if not isinstance(status, dict):
                status = {"message": str(status)[:500]}
            raise ApiError(
                resp.status,
                str(status.get("reason") or resp.reason or ""),
                str(status.get("message") or ""),
                status,
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
        try:
            raw = resp.read()
        finally:
            resp.release_conn()
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
        buf = b""
        try:
            for chunk in resp.stream(16384, decode_content=True):
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
            resp.close()
            resp.release_conn()


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
