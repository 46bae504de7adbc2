"""The router's upstream HTTP/1.1 client against a raw socket server that answers byte for byte
what each test scripts: framings, splits at every byte, interim responses, keep-alive and
closes, and every way an answer can break."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from zeta_router.router.http1 import (
    BodyError,
    ConnectError,
    DisconnectedError,
    Pool,
    Response,
)

# A script: given the connection's request count, the pieces to write (None: close).
Script = Callable[[int], list[bytes | None]]


@asynccontextmanager
async def server(script: Script) -> AsyncIterator[dict[str, Any]]:
    seen: dict[str, Any] = {"connections": 0, "requests": []}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                seen["requests"].append(head + body)
                for piece in script(n):
                    if piece is None:
                        writer.close()
                        return
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)
                n += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    seen["url"] = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    try:
        yield seen
    finally:
        srv.close()


def split_every_byte(data: bytes) -> list[bytes | None]:
    return [data[i : i + 1] for i in range(len(data))]


async def call(pool: Pool, body: bytes = b"{}", seconds: float = 5.0) -> tuple[Response, bytes]:
    deadline = pool.loop.time() + seconds
    resp = await pool.request("POST", "/v1/x", {"Content-Type": "application/json"}, body, deadline)
    async with resp:  # the caller closes: back to the pool if read to its end
        data = await resp.read(deadline)
    return resp, data


def run(coro: Any) -> Any:
    return asyncio.run(coro)


LENGTH = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": "bc"}'
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n"
    b"1\r\n \r\n"
    b"5\r\nworld\r\n"
    b"0\r\nX-Trailer: t\r\n\r\n"
)


@pytest.mark.parametrize(("raw", "body"), [(LENGTH, b'{"a": "bc"}'), (CHUNKED, b"hello world")])
def test_bodies_split_at_every_byte_and_kept_alive(raw: bytes, body: bytes) -> None:
    async def main() -> None:
        async with server(lambda n: split_every_byte(raw)) as s:
            pool = Pool(s["url"], 5.0)
            for _ in range(3):
                resp, data = await call(pool)
                assert resp.status == 200
                assert data == body
            assert s["connections"] == 1  # one connection, kept alive
            await pool.close()

    run(main())


def test_interim_responses_are_skipped_and_headers_read() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" + LENGTH.replace(
        b"OK\r\n", b"OK\r\nX-A: 1\r\nX-A: 2\r\n"
    )

    async def main() -> None:
        async with server(lambda n: [raw]) as s:
            pool = Pool(s["url"], 5.0)
            resp, data = await call(pool)
            assert resp.status == 200
            assert resp.headers["x-a"] == "1, 2"
            assert resp.headers["content-type"] == "application/json"
            assert data == b'{"a": "bc"}'

    run(main())


def test_a_body_delimited_by_the_close_and_connection_close_are_not_reused() -> None:
    until_close = [b"HTTP/1.1 200 OK\r\n\r\nall of it", None]
    closing = [LENGTH.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n")]

    async def main() -> None:
        for script in (until_close, closing):
            async with server(lambda n, sc=script: sc) as s:  # type: ignore[misc]
                pool = Pool(s["url"], 5.0)
                for _ in range(2):
                    _, data = await call(pool)
                    assert data in (b"all of it", b'{"a": "bc"}')
                assert s["connections"] == 2

    run(main())


def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    async def main() -> None:
        # The server answers, then closes the connection while it is idle in the pool.
        async with server(lambda n: [LENGTH, None]) as s:
            pool = Pool(s["url"], 5.0)
            for _ in range(3):
                _, data = await call(pool)
                assert data == b'{"a": "bc"}'
            assert s["connections"] == 3

    run(main())


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ([None], DisconnectedError),  # closed before any answer
        ([b"SSH-2.0-OpenSSH\r\n\r\n"], DisconnectedError),  # not HTTP
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", None], BodyError),
        ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], BodyError),
        ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", None], BodyError),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"], DisconnectedError),
    ],
)
def test_every_break_is_its_exception(script: list[bytes | None], error: type[Exception]) -> None:
    async def main() -> None:
        async with server(lambda n: script) as s:
            pool = Pool(s["url"], 5.0)
            with pytest.raises(error):
                await call(pool)
            assert not pool.busy  # nothing left claimed
            assert not pool.idle  # and the broken connection is not reused

    run(main())


def test_timeouts_and_refused_connections() -> None:
    async def main() -> None:
        async with server(lambda n: []) as s:  # reads the request, never answers
            pool = Pool(s["url"], 5.0)
            with pytest.raises(TimeoutError):
                await call(pool, seconds=0.2)
            assert not pool.busy
        pool = Pool(s["url"], 5.0)  # nothing listens there any more
        with pytest.raises(ConnectError):
            await call(pool)

    run(main())


def test_header_values_cannot_split_the_request() -> None:
    async def main() -> None:
        async with server(lambda n: [LENGTH]) as s:
            pool = Pool(s["url"] + "/prefix", 5.0)
            deadline = pool.loop.time() + 5
            headers = {"Authorization": "Bearer x\r\nX-Injected: 1", "X-Ok": "fine"}
            resp = await pool.request("POST", "/v1/x", headers, b"{}", deadline)
            await resp.read(deadline)
            resp.close()
            (request,) = s["requests"]
            assert request.startswith(b"POST /prefix/v1/x HTTP/1.1\r\n")
            assert b"X-Injected" not in request
            assert b"X-Ok: fine\r\n" in request
            assert b"Content-Length: 2\r\n" in request

    run(main())


def test_a_large_body_is_read_with_backpressure() -> None:
    big = b"x" * (3 << 20)
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(big)).encode() + b"\r\n\r\n" + big

    async def main() -> None:
        async with server(lambda n: [raw[i : i + 65536] for i in range(0, len(raw), 65536)]) as s:
            pool = Pool(s["url"], 5.0)
            deadline = pool.loop.time() + 30
            resp = await pool.request("POST", "/", {}, b"", deadline)
            got = 0
            async for chunk in resp.chunks(deadline):
                got += len(chunk)
                await asyncio.sleep(0)  # a slow reader
            resp.close()
            assert got == len(big)
            assert len(pool.idle) == 1  # read to its end: kept for the next request

    run(main())


def test_connections_are_renewed_after_their_maximum_age() -> None:
    """A Service spreads connections over its pods, not requests: a connection kept for ever
    would pin a router to the pods that existed when it connected."""

    async def main() -> None:
        async with server(lambda n: [LENGTH]) as seen:
            kept = Pool(seen["url"], 1.0, max_age_seconds=3600)
            for _ in range(3):
                await call(kept)
            assert seen["connections"] == 1
            await kept.close()
            renewed = Pool(seen["url"], 1.0, max_age_seconds=0)
            for _ in range(3):
                await call(renewed)
            assert seen["connections"] == 1 + 3
            assert not renewed.idle
            await renewed.close()

    run(main())


def test_a_name_resolved_ahead_of_time_is_connected_to_without_the_resolver() -> None:
    # ".invalid" never resolves (RFC 2606): only the address known ahead of time can reach the
    # server, and the name still names it in the Host header.
    async def main() -> None:
        async with server(lambda n: [LENGTH]) as s:
            port = s["url"].rsplit(":", 1)[1]
            asked: list[str] = []

            def known(host: str) -> tuple[str, ...] | None:
                asked.append(host)
                return ("127.0.0.1",)

            pool = Pool(f"http://tier.example.invalid:{port}", 5.0, known=known)
            resp, _ = await call(pool)
            assert resp.status == 200
            assert asked == ["tier.example.invalid"]
            assert f"Host: tier.example.invalid:{port}".encode() in s["requests"][0]
            # Nothing known: the name is resolved for the connection (and here cannot be).
            unknown = Pool(f"http://tier.example.invalid:{port}", 5.0, known=lambda h: None)
            with pytest.raises(ConnectError):
                await call(unknown)

    run(main())
