"""HTTP requests the operator makes to addresses a ZetaRouter names, with bounds.

A ZetaRouter's author chooses the Prometheus URL and the router image, so whatever answers there
is untrusted. Every such request of the operator (Prometheus queries, the learner's pages of
routers' samples) goes through :func:`fetch`:

- **no redirect is followed**: a 3xx answer is an error, its target never contacted;
- **a total deadline**, not a per-read timeout: connecting, the TLS handshake, the headers and
  the body together end by then (a watchdog shuts the socket down), so a server sending one
  byte a second is cut off like a silent one;
- **a size bound**: the body is read in pieces and abandoned past ``max_bytes``;
- **nothing of the answer is echoed**: a failure is a :class:`FetchError` whose message is fixed
  text plus, at most, the HTTP status code. Failures below HTTP (refused, reset, timed out, not
  HTTP, TLS) are one kind with one message, so what a user sees does not tell an open port from
  a closed one.

Each call uses a connection of its own, closed after it: no pool that a slow server could hold.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

#: Bytes read from the socket at a time.
_CHUNK: Final = 64 * 1024

Kind = Literal["unreachable", "redirect", "status", "too-large", "not-allowed"]


class FetchError(Exception):
    """A request that gave nothing usable. ``str()`` is fixed text (and a status code), safe to
    put into a status condition, an Event or a log."""

    def __init__(self, kind: Kind, status: int | None = None, limit: int | None = None) -> None:
        self.kind: Kind = kind
        self.status = status
        self.limit = limit
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.kind == "redirect":
            return f"answered HTTP {self.status} (a redirect; redirects are not followed)"
        if self.kind == "status":
            return f"answered HTTP {self.status}"
        if self.kind == "too-large":
            return f"answered more than {self.limit} bytes"
        if self.kind == "not-allowed":
            return "is not in the operator's allowed endpoints"
        return "gave no HTTP answer in time (unreachable, refused, timed out or not HTTP)"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class _Watchdog:
    """Shuts a connection's socket down at the deadline, whatever phase it is blocked in."""

    def __init__(self, conn: http.client.HTTPConnection, seconds: float) -> None:
        self.conn = conn
        self.fired = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def fetch(
    url: str,
    *,
    deadline_seconds: float,
    max_bytes: int,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    tls_verify: bool = True,
    ca_file: str | None = None,
) -> Answer:
    """One request; the answer when its status is 2xx, else :class:`FetchError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("unreachable")
    started = time.monotonic()
    remaining = deadline_seconds
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=ca_file)
        if not tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=remaining, context=context
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=remaining)
    watchdog = _Watchdog(conn, remaining)
    try:
        with watchdog:
            try:
                # Uncompressed: the size bound is the size of what is used (no decompression
                # bomb), and callers get the body as sent.
                sent = {k: v for k, v in (headers or {}).items() if k.lower() != "accept-encoding"}
                sent["Accept-Encoding"] = "identity"
                conn.request(method, target, body=body, headers=sent)
                resp = conn.getresponse()
                status = resp.status
                if 300 <= status < 400:
                    raise FetchError("redirect", status)
                if not 200 <= status < 300:
                    raise FetchError("status", status)
                pieces: list[bytes] = []
                size = 0
                while True:
                    chunk = resp.read1(_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError("too-large", limit=max_bytes)
                    pieces.append(chunk)
                    if time.monotonic() - started > deadline_seconds:
                        raise FetchError("unreachable")
                if watchdog.fired or (resp.length or 0) > 0:
                    # Cut off by the deadline, or the server closed before the whole body.
                    raise FetchError("unreachable")
                answer_headers = {k.lower(): v for k, v in resp.getheaders()}
            except FetchError:
                raise
            except (OSError, http.client.HTTPException, ValueError):
                raise FetchError("unreachable") from None
        if watchdog.fired:
            raise FetchError("unreachable")
        return Answer(status, answer_headers, b"".join(pieces))
    finally:
        conn.close()


# ---- the allow-list of endpoints ---------------------------------------------------------------


@dataclass(frozen=True)
class EndpointAllowList:
    """Hosts (exact names or IP addresses) and networks (CIDRs) the operator may query; empty
    allows any. A name matched by a network is resolved here, and every address it resolves to
    must lie in an allowed network."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str]) -> EndpointAllowList:
        """From the command line (``--prometheus-endpoint``, repeated or comma-separated);
        raises ``ValueError`` naming a bad entry."""
        hosts: set[str] = set()
        networks = []
        for raw in entries:
            for item in (s.strip() for s in raw.split(",")):
                if not item:
                    continue
                if "/" in item:
                    try:
                        networks.append(ipaddress.ip_network(item, strict=False))
                    except ValueError:
                        raise ValueError(f"not a CIDR: {item!r}") from None
                elif any(c in item for c in ":@?#") and not _is_ip(item):
                    raise ValueError(f"not a host name, address or CIDR: {item!r}")
                else:
                    hosts.add(item.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    @property
    def restricts(self) -> bool:
        return bool(self.hosts or self.networks)

    def allows(self, url: str) -> bool:
        if not self.restricts:
            return True
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        if not host:
            return False
        if host in self.hosts:
            return True
        if not self.networks:
            return False
        if _is_ip(host):
            addresses = [ipaddress.ip_address(host)]
        else:
            try:
                infos = socket.getaddrinfo(host, None)
            except OSError:
                return False
            addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        return bool(addresses) and all(
            any(a in n for n in self.networks if a.version == n.version) for a in addresses
        )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
