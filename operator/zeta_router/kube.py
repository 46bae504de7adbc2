"""The operator's and the tooling's door to the Kubernetes API: a small JSON facade over the
official ``kubernetes`` client, and the credentials that it and kopf log in with.

Child objects come from pure ``get_*`` builders as dicts and call sites speak in API paths
(:func:`api_path`), so the facade sends and receives plain JSON through the client's public
``ApiClient.call_api`` and never builds its generated model classes. Everything about *who* we
are and *how* the apiserver is reached is the client's: ``kubernetes.config`` reads the
kubeconfig as kubectl does (several ``$KUBECONFIG`` files merged, ``exec`` credential plugins run
again when their ``expirationTimestamp`` passes, OIDC and other ``auth-provider`` entries,
client certificates, ``tls-server-name``) or the in-cluster service account (its token re-read
as the kubelet rotates it). What that client does not do, done here by its public hooks:

- ``as:`` / ``as-uid:`` / ``as-user-extra:`` impersonation (sent as ``Impersonate-*`` headers;
  ``as-groups`` with one group only: the client's header dict cannot repeat a header);
- the cluster's ``proxy-url``, and ``HTTPS_PROXY``/``NO_PROXY`` resolved once here for every
  client version (kubectl's order: ``proxy-url`` first, then the environment);
- retries with backoff on 429 (``Retry-After`` honoured), on 5xx answers to reads and on
  connections that failed or were reset, and every transport error as :class:`TransportError`
  (an :class:`ApiError`), so that no urllib3 exception escapes a daemon;
- ``list`` follows ``continue`` tokens (pages of :data:`LIST_PAGE_SIZE`).

kopf logs in through :func:`kopf_login`, from the same loader, so the operator's two API clients
always act as the same identity. Tokens never appear in a repr, an error or a log line.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import os
import random
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3

JSON = dict[str, Any]

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
"""Server-side apply (JSON is YAML, so the body is sent as JSON)."""
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
"""Accept header asking for an object's metadata only (its data never leaves the apiserver)."""

LIST_PAGE_SIZE = 500
"""Objects per page of a list: the apiserver's own default for paginating clients (kubectl)."""

RETRY_ATTEMPTS = 6
"""Tries of one request (the first included) before its last error is raised."""
RETRY_BASE_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0
"""Longest single wait between tries, a ``Retry-After`` included (APF asks for ~1 s)."""

# Methods whose repetition changes nothing: retried after a reset connection (the request may
# have reached the apiserver) and after a 5xx answer. A create (POST) or a merge patch of a
# counter is retried only when the connection was never made.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class ApiError(Exception):
    """A non-2xx answer from the apiserver, with its Status ``reason`` and ``message``."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        body: JSON | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}
        self.headers: Mapping[str, str] = headers or {}

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class TransportError(ApiError):
    """The apiserver could not be reached or answered nothing usable (refused, reset, timed
    out, TLS failure, a credential plugin that failed): status 0, so every ``except ApiError``
    of a control loop handles it like any other failed call."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "TransportError", message)


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
class Impersonation:
    """The kubeconfig user's ``as:`` fields (kubectl's ``--as``), as request headers."""

    user: str | None = None
    uid: str | None = None
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.user or self.uid or self.groups or self.extra)

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.user:
            out["Impersonate-User"] = self.user
        if self.uid:
            out["Impersonate-Uid"] = self.uid
        if self.groups:
            out["Impersonate-Group"] = self.groups[0]
        for key, values in self.extra.items():
            if values:
                out[f"Impersonate-Extra-{quote(key, safe='')}"] = values[0]
        return out


@dataclass(frozen=True)
class Target:
    """What the kubeconfig (or the pod) says beyond what ``kubernetes.config`` applies itself."""

    source: str
    context: str | None = None
    namespace: str | None = None
    proxy_url: str | None = None
    plugin: str | None = None
    """The user's ``exec`` command or ``auth-provider`` name, if credentials come from one."""
    impersonation: Impersonation = field(default_factory=Impersonation)


def _kubeconfig_paths(kubeconfig: str | os.PathLike[str] | None) -> list[Path] | None:
    """The kubeconfig files to read, in kubectl's order; ``None`` for the in-cluster account."""
    if kubeconfig is not None:
        return [Path(kubeconfig)]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    default = Path.home() / ".kube" / "config"
    if default.exists():
        return [default]
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    raise CredentialsError(
        "no Kubernetes credentials: pass --kubeconfig, set $KUBECONFIG, create ~/.kube/config, "
        "or run in a pod with a service account"
    )


def _kubeconfig_target(paths: list[Path], context: str | None) -> Target:
    """The chosen context's namespace, its cluster's ``proxy-url`` and its user's ``as:``
    fields, from the files merged as ``kubernetes.config`` merges them (first one wins)."""
    from kubernetes.config import kube_config

    merger: Any = kube_config.KubeConfigMerger

    existing = [str(p) for p in paths if p.exists()]
    where = ", ".join(str(p) for p in paths)
    if not existing:
        raise CredentialsError(f"kubeconfig not found: {where}")
    try:
        doc = merger(os.pathsep.join(existing)).config.value
    except Exception as e:  # yaml errors and the merger's own
        raise CredentialsError(f"cannot read kubeconfig {where}: {e}") from e

    def entries(kind: str) -> list[JSON]:
        # The merger wraps each named entry in a ConfigNode; its ``value`` is the plain dict.
        out = [getattr(e, "value", e) for e in doc.get(kind) or []]
        return [e for e in out if isinstance(e, dict)]

    def named(kind: str, name: Any) -> JSON:
        for entry in entries(kind):
            if entry.get("name") == name:
                value = entry.get(kind[:-1]) or {}
                return value if isinstance(value, dict) else {}
        return {}

    ctx_name = context or _first_current_context(existing) or doc.get("current-context")
    if not ctx_name:
        raise CredentialsError(f"kubeconfig {where} has no current-context (pass --context)")
    contexts = {e.get("name") for e in entries("contexts")}
    if ctx_name not in contexts:
        raise CredentialsError(f"kubeconfig {where}: context {ctx_name!r} is not defined")
    ctx = named("contexts", ctx_name)
    cluster = named("clusters", ctx.get("cluster"))
    user = named("users", ctx.get("user"))
    extra = user.get("as-user-extra") or {}
    return Target(
        source=f"kubeconfig {where} (context {ctx_name})",
        context=str(ctx_name),
        namespace=ctx.get("namespace"),
        proxy_url=cluster.get("proxy-url"),
        plugin=(user.get("exec") or {}).get("command")
        or (user.get("auth-provider") or {}).get("name"),
        impersonation=Impersonation(
            user=user.get("as"),
            uid=user.get("as-uid"),
            groups=tuple(str(g) for g in user.get("as-groups") or []),
            extra={str(k): tuple(map(str, v or [])) for k, v in extra.items()},
        ),
    )


def _first_current_context(paths: list[str]) -> str | None:
    """kubectl's rule for several files: the first file that sets current-context wins (the
    client's merger lets the last one win, so the context is chosen here and passed on)."""
    import yaml

    for path in paths:
        try:
            doc = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and doc.get("current-context"):
            return str(doc["current-context"])
    return None


def proxy_for(server: str, proxy_url: str | None = None) -> str | None:
    """The proxy a request to ``server`` goes through, as kubectl picks it: the cluster's
    ``proxy-url``, else ``$HTTPS_PROXY``/``$HTTP_PROXY`` (by the server's scheme) unless
    ``$NO_PROXY`` names the host."""
    if proxy_url:
        return proxy_url
    parts = urlsplit(server)
    proxies = urllib.request.getproxies_environment()
    chosen = proxies.get(parts.scheme or "https")
    if not chosen:
        return None
    host = parts.hostname or ""
    # Not in typeshed, but public and documented next to getproxies_environment.
    if urllib.request.proxy_bypass_environment(host, proxies):  # type: ignore[attr-defined]
        return None
    if _in_no_proxy_cidr(host, proxies.get("no", "")):
        return None
    return chosen


def _in_no_proxy_cidr(host: str, no_proxy: str) -> bool:
    """``$NO_PROXY``'s CIDR entries (``10.0.0.0/8``), which kubectl honours and urllib does not."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    for entry in no_proxy.split(","):
        entry = entry.strip()
        if "/" not in entry:
            continue
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def load_configuration(
    kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None
) -> tuple[Any, Target]:
    """A ``kubernetes.client.Configuration`` for ``kubeconfig`` (else ``$KUBECONFIG``, a list of
    files, else ``~/.kube/config``, else the in-cluster service account) and ``context`` (else
    the current one), with what :class:`Target` adds applied to it."""
    from kubernetes import client
    from kubernetes import config as kconfig

    # Untyped before kubernetes 37, typed after: used as such.
    config: Any = kconfig
    paths = _kubeconfig_paths(kubeconfig)
    cfg = client.Configuration()
    if paths is None:
        if context:
            raise CredentialsError(f"--context {context!r} given, but there is no kubeconfig")
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException as e:
            raise CredentialsError(f"in a pod, but the service account is unusable: {e}") from e
        target = Target(source="service account", namespace=_in_cluster_namespace())
    else:
        target = _kubeconfig_target(paths, context)
        try:
            config.load_kube_config(
                config_file=os.pathsep.join(str(p) for p in paths if p.exists()),
                context=target.context,
                client_configuration=cfg,
            )
        except (config.ConfigException, OSError, ValueError) as e:
            raise CredentialsError(f"{target.source}: {e}") from e
        if target.plugin and not (_bearer(cfg) or cfg.cert_file):
            # The client logs a failed plugin and goes on anonymous; better to stop here.
            raise CredentialsError(
                f"{target.source}: the credential plugin {target.plugin!r} gave no credentials"
            )
    cfg.proxy = proxy_for(cfg.host, target.proxy_url)
    # The choice is made above, NO_PROXY included; the client must not make it again.
    cfg.no_proxy = None
    # Retries are ours (below): urllib3's own would retry a POST after a reset connection.
    cfg.retries = False
    return cfg, target


def _in_cluster_namespace() -> str | None:
    try:
        return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
    except OSError:
        return None


def kopf_login(kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None) -> Any:
    """A ``kopf.ConnectionInfo`` for the same identity as :class:`Kube` (kopf calls this again
    whenever the apiserver answers 401, so an expired exec or OIDC token is renewed by loading
    afresh). kopf's client has no impersonation or ``tls-server-name``: such a kubeconfig is
    refused here rather than have kopf watch as someone else than the operator writes as."""
    import kopf

    cfg, target = load_configuration(kubeconfig, context)
    if target.impersonation:
        raise kopf.LoginError(
            f"{target.source}: impersonation (as:) is not supported by the operator's watch "
            "client; give the operator the impersonated identity's own credentials"
        )
    if getattr(cfg, "tls_server_name", None):
        raise kopf.LoginError(
            f"{target.source}: tls-server-name is not supported by the operator's watch client"
        )
    header = _bearer(cfg)
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert or None,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme="Bearer" if header else None,
        token=header,
        certificate_path=cfg.cert_file or None,
        private_key_path=cfg.key_file or None,
        default_namespace=target.namespace,
        proxy_url=cfg.proxy or None,
    )


def _bearer(cfg: Any) -> str | None:
    """The bearer token the configuration holds now (its refresh hook runs an expired exec
    plugin again), without the ``Bearer`` prefix."""
    auth = cfg.auth_settings().get("BearerToken")
    value = str(auth["value"]) if auth and auth.get("value") else ""
    scheme, _, token = value.partition(" ")
    return (token if token else scheme) or None


# ---- client ------------------------------------------------------------------------------------


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or ``None``."""
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before try ``attempt + 1``: what the server asked for, else exponential
    backoff with jitter; never more than :data:`RETRY_MAX_SECONDS`."""
    if retry_after is not None:
        return min(retry_after, RETRY_MAX_SECONDS)
    base = RETRY_BASE_SECONDS * (2**attempt)
    return float(min(RETRY_MAX_SECONDS, base * (0.5 + random.random() / 2)))


def _never_sent(error: BaseException) -> bool:
    """The connection was never made, so the request cannot have reached the apiserver."""
    reason = getattr(error, "reason", None)
    unsent = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    return isinstance(error, unsent) or isinstance(reason, unsent)


class Kube:
    """Thread-safe (the client's urllib3 pool is)."""

    def __init__(
        self,
        configuration: Any,
        target: Target | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from kubernetes import client

        self.configuration = configuration
        self.target = target or Target(source=str(configuration.host))
        self.timeout = timeout
        self._sleep = sleep
        api: Any = client.ApiClient(configuration)
        # Named in the apiserver's audit log and in APF's flow distinction.
        api.user_agent = f"zeta-router/{_version()}"
        for name, value in self.target.impersonation.headers().items():
            api.set_default_header(name, value)
        self._api = api

    @classmethod
    def from_kubeconfig(
        cls, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None
    ) -> Kube:
        cfg, target = load_configuration(kubeconfig, context)
        return cls(cfg, target)

    def __repr__(self) -> str:
        return f"Kube(server={self.server!r}, source={self.target.source!r})"

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    @property
    def ca_file(self) -> str | None:
        """The file holding the cluster's CA (``None``: the system's trust store)."""
        return self.configuration.ssl_ca_cert or None

    @property
    def verify_ssl(self) -> bool:
        return bool(self.configuration.verify_ssl)

    @property
    def default_namespace(self) -> str | None:
        return self.target.namespace

    # ---- one request -------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: Any,
        timeout: float | tuple[float, float],
    ) -> urllib3.BaseHTTPResponse:
        """One request through the client's public ``call_api``, the response unread.
        Non-2xx answers become :class:`ApiError`, everything else :class:`TransportError`."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config import ConfigException

        # One of two generations of the generated client (see below): used untyped.
        api: Any = self._api
        try:
            if hasattr(api, "param_serialize"):
                # kubernetes >= 37: serialise, send, and get the unread urllib3 response.
                m, url, hdrs, data, post = api.param_serialize(
                    method=method,
                    resource_path=path,
                    query_params=query,
                    header_params=headers,
                    body=body,
                    auth_settings=["BearerToken"],
                )
                resp = api.call_api(m, url, hdrs, data, post, _request_timeout=timeout).response
            else:
                resp = api.call_api(
                    path,
                    method,
                    query_params=query,
                    header_params=headers,
                    body=body,
                    auth_settings=["BearerToken"],
                    _return_http_data_only=True,
                    _preload_content=False,
                    _request_timeout=timeout,
                )
        except ApiException as e:
            if not e.status:
                raise TransportError(str(e.reason or e)) from None
            raise _api_error(int(e.status), str(e.reason or ""), e.body, e.headers) from None
        except urllib3.exceptions.HTTPError as e:
            raise TransportError(f"{type(e).__name__}: {e}") from e
        except (ConfigException, OSError) as e:
            # A credential plugin or token file that failed while refreshing.
            raise TransportError(f"credentials: {e}") from e
        if not 200 <= resp.status < 300:
            try:
                raw = resp.read()
            finally:
                resp.release_conn()
            raise _api_error(resp.status, str(resp.reason or ""), raw, resp.headers)
        return resp  # type: ignore[no-any-return]

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str | None,
        timeout: float | tuple[float, float] | None,
        accept: str = "application/json",
        retry: bool = True,
    ) -> urllib3.BaseHTTPResponse:
        headers = {"Accept": accept}
        if body is not None or method in ("POST", "PUT", "PATCH"):
            headers["Content-Type"] = content_type or "application/json"
        params = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None]
        t = timeout if timeout is not None else self.timeout
        idempotent = method in _IDEMPOTENT or content_type == APPLY_PATCH
        attempt = 0
        while True:
            try:
                return self._call(method, path, params, headers, body, t)
            except TransportError as e:
                cause = e.__cause__
                again = idempotent or (cause is not None and _never_sent(cause))
                if not retry or not again or attempt + 1 >= RETRY_ATTEMPTS:
                    raise
                delay = retry_delay(attempt)
            except ApiError as e:
                again = e.status == 429 or (e.status >= 500 and method in ("GET", "HEAD"))
                if not retry or not again or attempt + 1 >= RETRY_ATTEMPTS:
                    raise
                delay = retry_delay(attempt, _retry_after(e.headers) if e.status == 429 else None)
            log.debug("%s %s: try %d failed, again in %.2fs", method, path, attempt + 1, delay)
            self._sleep(delay)
            attempt += 1

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
        except urllib3.exceptions.HTTPError as e:
            raise TransportError(f"{type(e).__name__}: {e}") from e
        finally:
            resp.release_conn()
        try:
            result: JSON = json.loads(raw) if raw else {}
        except ValueError as e:
            raise TransportError(f"{method} {path}: the answer is not JSON") from e
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
        """All items of a collection, fetched in pages of :data:`LIST_PAGE_SIZE` (``limit`` in
        ``query`` sets another size). One consistent snapshot: the apiserver serves every page
        at the first page's resourceVersion; when that expires midway (410), the list starts
        again unpaginated, as client-go's pager does."""
        base = {"labelSelector": label_selector, **query}
        base.setdefault("limit", LIST_PAGE_SIZE)
        items: list[Any] = []
        token: str | None = None
        while True:
            try:
                page = self.request("GET", path, {**base, "continue": token})
            except ApiError as e:
                if e.status == 410 and token is not None:
                    return self.request("GET", path, {**base, "limit": None})
                raise
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if token is None:
                page["items"] = items
                meta.pop("remainingItemCount", None)
                return page

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
        ``timeout_seconds``). An ``ERROR`` event (e.g. 410 Gone) is raised as :class:`ApiError`,
        a broken stream as :class:`TransportError`: the caller lists again."""
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
        except urllib3.exceptions.HTTPError as e:
            raise TransportError(f"watch of {path} broke: {type(e).__name__}: {e}") from e
        finally:
            # A watch ended early still has unread data on its connection: drop that connection
            # instead of handing it back to the pool.
            resp.close()
            resp.release_conn()


def _version() -> str:
    # From the installed distribution: this module imports nothing of the package's own.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zeta-router")
    except PackageNotFoundError:
        return "unknown"


def _api_error(status: int, reason: str, raw: Any, headers: Any) -> ApiError:
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"message": str(raw)[:500]}
    if not isinstance(body, dict):
        body = {"message": str(body)[:500]}
    hdrs = {str(k): str(v) for k, v in dict(headers or {}).items()}
    return ApiError(
        status,
        str(body.get("reason") or reason or ""),
        str(body.get("message") or ""),
        body,
        hdrs,
    )


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
