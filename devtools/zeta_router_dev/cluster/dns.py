"""The local node's cluster DNS: Service names to addresses, so that pods reach each other the
way they do on any cluster (a router reaches another tier at ``http://<router>-<tier>.<ns>.svc``,
and finds the tier's ready pods at ``<router>-<tier>-replicas.<ns>.svc``).

Debian has no CoreDNS; this small server covers what pods here need and nothing more: ``A``
records for ``<service>.<namespace>.svc.<domain>`` (a Service's ClusterIP, or for a headless
Service the addresses of its ready endpoints, as CoreDNS answers), an empty answer for other
record types of those names, ``NXDOMAIN`` for every other name in the cluster domain, and names
outside it forwarded to this machine's own nameservers (``/etc/resolv.conf``). No records for
pods or SRV. It listens on the node's bridge address (the kubelet's ``clusterDNS``), UDP and
TCP, and follows Services and Endpoints with lists and watches as the kube-dns identity
(default RBAC's ``system:kube-dns`` role: read Services and Endpoints).

Run as ``python -m zeta_router_dev.cluster.dns --kubeconfig FILE --listen ADDRESS``.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import signal
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("zeta_router.dns")

TYPE_A: Final = 1
TYPE_ANY: Final = 255
CLASS_IN: Final = 1
NOERROR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 2, 3, 4, 5
TTL: Final = 5


class DnsFormatError(ValueError):
    """A message that is not a DNS query we can read."""


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str
    qtype: int
    qclass: int
    question: bytes
    """The question section as received, echoed in the answer."""


def parse_query(data: bytes) -> Query:
    if len(data) < 12:
        raise DnsFormatError("shorter than a DNS header")
    ident, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qdcount != 1:
        raise DnsFormatError("not a query with one question")
    labels: list[str] = []
    pos = 12
    while True:
        if pos >= len(data):
            raise DnsFormatError("name runs past the message")
        length = data[pos]
        if length & 0xC0:
            raise DnsFormatError("compressed name in a question")
        pos += 1
        if length == 0:
            break
        labels.append(data[pos : pos + length].decode("ascii", errors="replace"))
        pos += length
    if pos + 4 > len(data):
        raise DnsFormatError("question without type and class")
    qtype, qclass = struct.unpack("!HH", data[pos : pos + 4])
    return Query(ident, flags, ".".join(labels).lower(), qtype, qclass, data[12 : pos + 4])


def build_response(
    query: Query, rcode: int, addresses: Sequence[str] = (), authoritative: bool = True
) -> bytes:
    """An answer to ``query``: ``rcode`` and one ``A`` record per address."""
    opcode_rd = query.flags & 0x7900  # opcode and RD from the query
    flags = 0x8000 | opcode_rd | 0x0080 | (rcode & 0xF)  # QR, RA
    if authoritative:
        flags |= 0x0400
    header = struct.pack("!HHHHHH", query.id, flags, 1, len(addresses), 0, 0)
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + ipaddress.IPv4Address(a).packed
        for a in addresses
    )
    return header + query.question + answers


@dataclass(frozen=True)
class Answer:
    rcode: int
    addresses: tuple[str, ...] = ()


def resolve(
    name: str, qtype: int, services: Mapping[tuple[str, str], Sequence[str]], domain: str
) -> Answer | None:
    """The answer for a name in the cluster domain, ``None`` for a name outside it (to be
    forwarded). ``services`` maps (namespace, name) to the Service's addresses: its ClusterIP,
    or a headless Service's ready endpoints (none: the name exists, with no record)."""
    name = name.rstrip(".").lower()
    suffix = "." + domain.lower()
    if name != domain.lower() and not name.endswith(suffix):
        return None
    labels = name[: -len(suffix)].split(".") if name.endswith(suffix) else []
    if len(labels) == 3 and labels[2] == "svc":
        addresses = services.get((labels[1], labels[0]))
        if addresses is not None:
            if qtype in (TYPE_A, TYPE_ANY):
                return Answer(NOERROR, tuple(addresses))
            return Answer(NOERROR)  # the name exists, with no record of this type
    return Answer(NXDOMAIN)


def upstream_nameservers(resolv_conf: str, exclude: Sequence[str] = ()) -> list[str]:
    out = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] not in exclude:
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(parts[1])
                out.append(parts[1])
    return out


class ServiceTable:
    """Each Service's addresses by (namespace, name), kept current by lists and watches of
    Services and Endpoints: a ClusterIP, or for a headless Service the ready addresses of its
    Endpoints (a terminating or unready pod is in ``notReadyAddresses``, so never answered)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ips: dict[tuple[str, str], str] = {}
        self._headless: set[tuple[str, str]] = set()
        self._ready: dict[tuple[str, str], tuple[str, ...]] = {}
        self.synced = threading.Event()  # Services listed (Endpoints may follow)

    def snapshot(self) -> dict[tuple[str, str], tuple[str, ...]]:
        with self._lock:
            out: dict[tuple[str, str], tuple[str, ...]] = {k: (ip,) for k, ip in self._ips.items()}
            out.update({key: self._ready.get(key, ()) for key in self._headless})
            return out

    def replace(self, services: Sequence[Mapping[str, Any]]) -> None:
        ips, headless = {}, set()
        for svc in services:
            key, ip = _service_entry(svc)
            if ip == "None":
                headless.add(key)
            elif ip:
                ips[key] = ip
        with self._lock:
            self._ips, self._headless = ips, headless
        self.synced.set()

    def update(self, kind: str, svc: Mapping[str, Any]) -> None:
        key, ip = _service_entry(svc)
        with self._lock:
            self._ips.pop(key, None)
            self._headless.discard(key)
            if kind == "DELETED":
                return
            if ip == "None":
                self._headless.add(key)
            elif ip:
                self._ips[key] = ip

    def replace_endpoints(self, items: Sequence[Mapping[str, Any]]) -> None:
        ready = dict(_endpoints_entry(ep) for ep in items)
        with self._lock:
            self._ready = ready

    def update_endpoints(self, kind: str, ep: Mapping[str, Any]) -> None:
        key, addresses = _endpoints_entry(ep)
        with self._lock:
            if kind == "DELETED":
                self._ready.pop(key, None)
            else:
                self._ready[key] = addresses

    def follow(self, kube: Any, stop: threading.Event) -> None:
        """Follow Services here and Endpoints in a thread of their own, until ``stop``."""
        threading.Thread(
            target=_follow,
            args=(kube, "endpoints", self.replace_endpoints, self.update_endpoints, stop),
            daemon=True,
        ).start()
        _follow(kube, "services", self.replace, self.update, stop)


def _follow(
    kube: Any,
    resource: str,
    replace: Callable[[Sequence[Mapping[str, Any]]], None],
    update: Callable[[str, Mapping[str, Any]], None],
    stop: threading.Event,
) -> None:
    from zeta_router.kube import api_path

    path = api_path("v1", resource)
    while not stop.is_set():
        try:
            listing = kube.list(path)
            replace(listing.get("items", []))
            rv = listing["metadata"]["resourceVersion"]
            while not stop.is_set():
                for kind, obj in kube.watch(path, rv):
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        update(kind, obj)
        except Exception as e:
            if not stop.is_set():
                log.warning("%s watch restarting: %s", resource, e)
                stop.wait(1.0)


def _service_entry(svc: Mapping[str, Any]) -> tuple[tuple[str, str], str | None]:
    """(namespace, name) and the ClusterIP: an address, ``"None"`` (headless) or none yet."""
    meta = svc.get("metadata") or {}
    ip = (svc.get("spec") or {}).get("clusterIP")
    key = (str(meta.get("namespace")), str(meta.get("name")))
    return key, (str(ip) if ip else None)


def _endpoints_entry(ep: Mapping[str, Any]) -> tuple[tuple[str, str], tuple[str, ...]]:
    meta = ep.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    ready = sorted(
        {
            str(a["ip"])
            for subset in ep.get("subsets") or []
            for a in subset.get("addresses") or []
            if a.get("ip")
        }
    )
    return key, tuple(ready)


class Resolver:
    def __init__(self, table: ServiceTable, domain: str, upstream: Sequence[str]) -> None:
        self.table = table
        self.domain = domain
        self.upstream = list(upstream)

    def answer(self, data: bytes) -> bytes | None:
        try:
            query = parse_query(data)
        except DnsFormatError:
            return None
        if query.qclass != CLASS_IN:
            return build_response(query, NOTIMP, authoritative=False)
        found = resolve(query.name, query.qtype, self.table.snapshot(), self.domain)
        if found is not None:
            return build_response(query, found.rcode, found.addresses)
        return self.forward(query, data)

    def forward(self, query: Query, data: bytes) -> bytes:
        for server in self.upstream:
            family = socket.AF_INET6 if ":" in server else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(2.0)
                try:
                    s.sendto(data, (server, 53))
                    reply, _ = s.recvfrom(65535)
                    return reply
                except OSError:
                    continue
        rcode = SERVFAIL if self.upstream else REFUSED
        return build_response(query, rcode, authoritative=False)


def serve(resolver: Resolver, address: str, port: int) -> tuple[Any, Any]:
    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            reply = resolver.answer(data)
            if reply is not None:
                sock.sendto(reply, self.client_address)

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while True:
                head = self.rfile.read(2)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                reply = resolver.answer(self.rfile.read(length))
                if reply is None:
                    return
                self.wfile.write(struct.pack("!H", len(reply)) + reply)

    socketserver.ThreadingUDPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    udp = socketserver.ThreadingUDPServer((address, port), Udp)
    tcp = socketserver.ThreadingTCPServer((address, port), Tcp)
    udp.daemon_threads = tcp.daemon_threads = True
    for server in (udp, tcp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return udp, tcp


def lookup(name: str, server: str, port: int = 53, timeout: float = 2.0) -> list[str] | None:
    """Ask ``server`` for the A records of ``name`` (``None``: no answer or an error code)."""
    query = struct.pack("!HHHHHH", 0x5A7A, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        query += bytes([len(label)]) + label.encode()
    query += b"\0" + struct.pack("!HH", TYPE_A, CLASS_IN)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query, (server, port))
            reply, _ = s.recvfrom(4096)
        except OSError:
            return None
    if len(reply) < 12 or reply[:2] != query[:2] or reply[3] & 0xF != NOERROR:
        return None
    count = struct.unpack("!H", reply[6:8])[0]
    pos = len(query)
    out = []
    for _ in range(count):
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", reply[pos + 2 : pos + 12])
        if rtype == TYPE_A and rdlen == 4:
            out.append(str(ipaddress.IPv4Address(reply[pos + 12 : pos + 16])))
        pos += 12 + rdlen
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zeta_router_dev.cluster.dns",
        description="Cluster DNS of the local real node: Service names to ClusterIPs (headless "
        "Services: their ready endpoints).",
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--listen", required=True, help="address to listen on (UDP and TCP)")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--domain", default="cluster.local")
    parser.add_argument("--resolv-conf", type=Path, default=Path("/etc/resolv.conf"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from zeta_router.kube import Kube

    try:
        resolv = args.resolv_conf.read_text()
    except OSError:
        resolv = ""
    # Block the stop signals before any thread starts, so that only sigwait receives them.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    table = ServiceTable()
    stop = threading.Event()
    kube = Kube.from_kubeconfig(args.kubeconfig)
    resolver = Resolver(table, args.domain, upstream_nameservers(resolv, exclude=[args.listen]))
    watcher = threading.Thread(target=table.follow, args=(kube, stop), daemon=True)
    watcher.start()
    servers = serve(resolver, args.listen, args.port)
    log.info("serving %s on %s:%d (udp, tcp)", args.domain, args.listen, args.port)
    signal.sigwait(signals)
    stop.set()
    for server in servers:
        server.shutdown()
        server.server_close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
