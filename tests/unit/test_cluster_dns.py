"""The real node's cluster DNS: Service names to ClusterIPs (a headless Service's to its ready
endpoints), NXDOMAIN for other cluster names, everything else forwarded; over UDP and TCP,
against a server on 127.0.0.1."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from zeta_router_dev.cluster.dns import (
    NOERROR,
    NXDOMAIN,
    REFUSED,
    Answer,
    DnsFormatError,
    Resolver,
    ServiceTable,
    lookup,
    parse_query,
    resolve,
    serve,
    upstream_nameservers,
)

SERVICES = {("team-a", "chat-small"): "198.19.0.10", ("default", "kubernetes"): "198.19.0.1"}
ADDRESSES = {key: (ip,) for key, ip in SERVICES.items()}


def svc(ns: str, name: str, ip: str | None) -> dict[str, object]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"clusterIP": ip}}


def test_resolve_names_of_the_cluster_domain() -> None:
    name = "chat-small.team-a.svc.cluster.local"
    assert resolve(name, 1, ADDRESSES, "cluster.local") == Answer(NOERROR, ("198.19.0.10",))
    assert resolve(name.upper() + ".", 1, ADDRESSES, "cluster.local").addresses == ("198.19.0.10",)
    assert resolve(name, 28, ADDRESSES, "cluster.local") == Answer(NOERROR)  # AAAA: no data
    # A search-list expansion of a name that exists elsewhere does not.
    assert resolve(f"{name}.team-a.svc.cluster.local", 1, ADDRESSES, "cluster.local") == Answer(
        NXDOMAIN
    )
    assert resolve("pod.team-a.pod.cluster.local", 1, ADDRESSES, "cluster.local") == Answer(
        NXDOMAIN
    )
    assert resolve("pypi.org", 1, ADDRESSES, "cluster.local") is None  # forwarded


def endpoints(ns: str, name: str, ready: list[str], unready: list[str]) -> dict[str, object]:
    return {
        "metadata": {"namespace": ns, "name": name},
        "subsets": [
            {
                "addresses": [{"ip": ip} for ip in ready],
                "notReadyAddresses": [{"ip": ip} for ip in unready],
            }
        ],
    }


def test_service_table_follows_changes() -> None:
    table = ServiceTable()
    table.replace([svc("a", "x", "198.19.0.5"), svc("a", "pending", None)])
    assert table.snapshot() == {("a", "x"): ("198.19.0.5",)}
    assert table.synced.is_set()
    table.update("ADDED", svc("b", "y", "198.19.0.6"))
    table.update("DELETED", svc("a", "x", "198.19.0.5"))
    assert table.snapshot() == {("b", "y"): ("198.19.0.6",)}


def test_a_headless_service_answers_its_ready_endpoints_only() -> None:
    table = ServiceTable()
    table.replace([svc("a", "chat-small-replicas", "None"), svc("a", "chat-small", "198.19.0.9")])
    # Listed before its Endpoints: the name exists, with no address yet.
    assert table.snapshot()[("a", "chat-small-replicas")] == ()
    table.replace_endpoints(
        [
            endpoints("a", "chat-small-replicas", ["198.18.0.7", "198.18.0.5"], ["198.18.0.6"]),
            endpoints("a", "chat-small", ["198.18.0.7"], []),  # not headless: its ClusterIP
        ]
    )
    snap = table.snapshot()
    assert snap[("a", "chat-small-replicas")] == ("198.18.0.5", "198.18.0.7")
    assert snap[("a", "chat-small")] == ("198.19.0.9",)
    answer = resolve("chat-small-replicas.a.svc.cluster.local", 1, snap, "cluster.local")
    assert answer == Answer(NOERROR, ("198.18.0.5", "198.18.0.7"))
    # A pod that starts terminating moves to notReadyAddresses: no longer answered.
    table.update_endpoints(
        "MODIFIED", endpoints("a", "chat-small-replicas", ["198.18.0.5"], ["198.18.0.7"])
    )
    assert table.snapshot()[("a", "chat-small-replicas")] == ("198.18.0.5",)
    table.update_endpoints("DELETED", endpoints("a", "chat-small-replicas", [], []))
    assert table.snapshot()[("a", "chat-small-replicas")] == ()
    # The Service deleted: the name is gone.
    table.update("DELETED", svc("a", "chat-small-replicas", "None"))
    assert ("a", "chat-small-replicas") not in table.snapshot()
    gone = resolve("chat-small-replicas.a.svc.cluster.local", 1, table.snapshot(), "cluster.local")
    assert gone == Answer(NXDOMAIN)


def test_malformed_queries_are_refused_to_parse() -> None:
    with pytest.raises(DnsFormatError):
        parse_query(b"\x00\x01")
    answer = struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0) + b"\x00\x00\x01\x00\x01"
    with pytest.raises(DnsFormatError):
        parse_query(answer)


def test_upstream_nameservers() -> None:
    text = "search x\nnameserver 10.0.0.2\nnameserver 198.18.0.1\nnameserver bogus\n"
    assert upstream_nameservers(text, exclude=["198.18.0.1"]) == ["10.0.0.2"]


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    table = ServiceTable()
    table.replace([svc(ns, name, ip) for (ns, name), ip in SERVICES.items()])
    udp, tcp = serve(Resolver(table, "cluster.local", upstream=[]), "127.0.0.1", 0)
    # Both servers were asked for port 0: TCP must use the port UDP got to be one server.
    tcp.shutdown()
    tcp.server_close()
    port = udp.server_address[1]
    try:
        yield "127.0.0.1", port
    finally:
        udp.shutdown()
        udp.server_close()


def test_answers_over_udp(server: tuple[str, int]) -> None:
    host, port = server
    assert lookup("chat-small.team-a.svc.cluster.local", host, port) == ["198.19.0.10"]
    assert lookup("nothing.team-a.svc.cluster.local", host, port) is None  # NXDOMAIN
    # Outside the cluster domain with no upstream: REFUSED, answered at once.
    query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x04pypi\x03org\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(query, (host, port))
        reply, _ = s.recvfrom(512)
    assert reply[:2] == query[:2]
    assert reply[3] & 0xF == REFUSED


def test_answers_over_tcp() -> None:
    table = ServiceTable()
    table.replace([svc("default", "kubernetes", "198.19.0.1")])
    udp, tcp = serve(Resolver(table, "cluster.local", upstream=[]), "127.0.0.1", 0)
    try:
        host, port = tcp.server_address[:2]
        query = struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 0)
        for label in ["kubernetes", "default", "svc", "cluster", "local"]:
            query += bytes([len(label)]) + label.encode()
        query += b"\x00\x00\x01\x00\x01"
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(struct.pack("!H", len(query)) + query)
            (length,) = struct.unpack("!H", s.recv(2))
            reply = s.recv(length)
        assert reply[3] & 0xF == NOERROR
        assert reply[-4:] == socket.inet_aton("198.19.0.1")
    finally:
        for srv in (udp, tcp):
            srv.shutdown()
            srv.server_close()
