"""A lean HTTP/1.1 client for the router's upstream requests: keep-alive pools per tier, one
request per connection at a time, bodies delivered as they arrive.

Why not aiohttp's client: measured on the router's path it cost about ten times the CPU of this
one per request (URL and header objects, payload registry, tracing hooks, timer contexts), and
the router needs none of that; it needs to know exactly which failure happened where. Every
failure is one of a few exceptions: :class:`ConnectError` (no connection),
:class:`ConnectTimeoutError`, :class:`DisconnectedError` (the connection went away before the
response headers), :class:`BodyError` (after them: a short, malformed or cut body); waits end
at a deadline with ``TimeoutError``.

What is supported is what OpenAI-compatible servers send: ``Content-Length`` bodies, chunked
bodies (extensions and trailers ignored), bodies delimited by the connection's end, 1xx interim
responses, ``Connection: close``; plain TCP and TLS. A pooled connection that the server closed
while idle is detected and replaced before the request is sent (and a request that fails on a
reused connection before any response byte is sent again once on a new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import urlsplit

#: Largest response head (status line and headers) accepted.
MAX_HEAD = 64 * 1024
#: Body bytes held for a reader before the connection stops reading (backpressure).
HIGH_WATER = 1 << 20
LOW_WATER = 1 << 18
#: How long an unused pooled connection is kept.
IDLE_SECONDS = 30.0
#: How long a connection is reused at all. A tier's Service spreads connections, not requests,
#: over its pods (kube-proxy picks a pod per connection): a router that kept its connections
#: forever would never send a request to a replica added after it connected. Renewing them
#: this often spreads traffic onto new replicas within seconds, for one TCP connect per
#: connection per period.
MAX_AGE_SECONDS = 10.0


class ConnectError(OSError):
    """No connection could be made (refused, unreachable, TLS handshake failed)."""


class ConnectTimeoutError(TimeoutError):
    """No connection within the connect timeout."""


class DisconnectedError(ConnectionError):
    """The connection was lost before a complete response head arrived."""


class BodyError(ConnectionError):
    """The response body broke: the connection ended before its end, or it is malformed."""


class ProtocolError(DisconnectedError):
    """The response head is not HTTP/1.x."""


_HEAD, _BODY, _DONE = 0, 1, 2
_LENGTH, _CHUNKED, _UNTIL_CLOSE = 0, 1, 2


class _Connection(asyncio.Protocol):
    """One upstream connection: writes a request, parses the response as bytes arrive."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_handle: asyncio.TimerHandle | None = None
        self.head_request = False  # a response to HEAD has no body
        self.created = self.loop.time()
        self._reset()

    def _reset(self) -> None:
        self.state = _HEAD
        self.buf = bytearray()
        self.got_bytes = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = True
        self.mode = _LENGTH
        self.remaining = 0  # body bytes left (length mode) or in the current chunk
        self.chunk_state = 0  # 0: size line, 1: data, 2: CRLF after data, 3: trailers
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        if self.state == _HEAD:
            self._fail(DisconnectedError(f"connection lost before the response: {exc or 'closed'}"))
        elif self.state == _BODY:
            if self.mode == _UNTIL_CLOSE and exc is None:
                self.state = _DONE
                self.keep_alive = False
                self._wake()
            else:
                self._fail(BodyError(f"connection lost in the body: {exc or 'closed'}"))

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        if self.state == _DONE:
            self.keep_alive = False  # bytes past the response: the connection is not reused
            return
        self.buf += data
        try:
            self._parse()
        except (ProtocolError, BodyError) as exc:
            self._fail(exc)
            if self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool | None:
        return None  # close: connection_lost tells what that means

    # -- parsing ---------------------------------------------------------------------------

    def _parse(self) -> None:
        while True:
            if self.state == _HEAD:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        raise ProtocolError("response head too large")
                    return
                head = bytes(self.buf[:end])
                del self.buf[: end + 4]
                if not self._head(head):
                    continue  # a 1xx interim response: the real one follows
                self.state = _BODY
                self._wake()
            if self.state == _BODY:
                self._body()
                if self.state != _DONE:
                    return
            if self.state == _DONE:
                if self.buf:
                    self.keep_alive = False  # bytes past the response: do not reuse
                self._wake()
                return

    def _head(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x response: {lines[0][:60]!r}")
        status = int(parts[1])
        if 100 <= status < 200 and status != 101:
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ProtocolError("malformed response header line")
            key = name.strip().lower().decode("latin-1")
            val = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {val}" if key in headers else val
        self.status = status
        self.headers = headers
        version_11 = parts[0] == b"HTTP/1.1"
        conn = headers.get("connection", "").lower()
        self.keep_alive = ("close" not in conn) if version_11 else ("keep-alive" in conn)
        te = headers.get("transfer-encoding", "").lower()
        if status in (204, 304) or self.head_request:
            self.mode, self.remaining = _LENGTH, 0
        elif "chunked" in te:
            self.mode, self.chunk_state = _CHUNKED, 0
        elif "content-length" in headers:
            try:
                self.remaining = int(headers["content-length"].split(",")[0])
            except ValueError:
                raise ProtocolError("malformed Content-Length") from None
            if self.remaining < 0:
                raise ProtocolError("negative Content-Length")
            self.mode = _LENGTH
        else:
            self.mode, self.keep_alive = _UNTIL_CLOSE, False
        return True

    def _body(self) -> None:
        if self.mode == _LENGTH:
            if self.remaining and self.buf:
                take = bytes(self.buf[: self.remaining])
                del self.buf[: len(take)]
                self.remaining -= len(take)
                self._deliver(take)
            if self.remaining == 0:
                self.state = _DONE
        elif self.mode == _UNTIL_CLOSE:
            if self.buf:
                data = bytes(self.buf)
                self.buf.clear()
                self._deliver(data)
        else:
            self._chunks()

    def _chunks(self) -> None:
        buf = self.buf
        while buf:
            if self.chunk_state == 0:  # the size line
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise BodyError("malformed chunk size line")
                    return
                size_text = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BodyError(f"malformed chunk size {size_text[:20]!r}") from None
                if size == 0:
                    self.chunk_state = 3
                else:
                    self.remaining, self.chunk_state = size, 1
            elif self.chunk_state == 1:  # chunk data
                take = bytes(buf[: self.remaining])
                del buf[: len(take)]
                self.remaining -= len(take)
                self._deliver(take)
                if self.remaining == 0:
                    self.chunk_state = 2
            elif self.chunk_state == 2:  # the CRLF after the data
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise BodyError("malformed chunk end")
                del buf[:2]
                self.chunk_state = 0
            else:  # trailers, up to an empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self.state = _DONE
                    return

    def _deliver(self, data: bytes) -> None:
        if not data:
            return
        self.body.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None and self.state != _DONE:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- waiting ---------------------------------------------------------------------------

    async def wait(self, deadline: float | None) -> None:
        """Until more arrives (or an error or the end), at most until ``deadline`` (loop time):
        ``TimeoutError`` then."""
        w = self.waiter = self.loop.create_future()
        handle = None
        if deadline is not None:
            handle = self.loop.call_at(deadline, _expire, w)
        try:
            await w
        finally:
            self.waiter = None
            if handle is not None:
                handle.cancel()

    def take(self) -> bytes:
        data = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Response:
    """A response whose head is in; the body is read with :meth:`read`, :meth:`chunks` or
    :meth:`read_nowait`. :meth:`close` returns the connection to its pool when the body was read
    to its end, and closes it otherwise."""

    __slots__ = ("_conn", "_released", "headers", "status")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers  # lower-case names
        self._released = False

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived (it can be taken without waiting)."""
        return self._conn.state == _DONE

    def read_nowait(self) -> bytes:
        """Everything that has arrived; raises BodyError if the body broke."""
        conn = self._conn
        if conn.error is not None and conn.state != _DONE:
            raise conn.error
        return conn.take()

    async def chunks(self, deadline: float | None) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, until the end; BodyError or TimeoutError if it breaks."""
        conn = self._conn
        while True:
            if conn.body:
                yield conn.take()
                continue
            if conn.state == _DONE:
                return
            if conn.error is not None:
                raise conn.error
            await conn.wait(deadline)

    async def read(self, deadline: float | None, limit: int | None = None) -> bytes:
        """The body (or its first ``limit`` bytes)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks(deadline):
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size >= limit:
                break
        data = b"".join(parts)
        return data if limit is None else data[:limit]

    def close(self) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.state == _DONE and conn.keep_alive and not conn.closed and not conn.error:
            conn.pool.release(conn)
        else:
            conn.pool.discard(conn)

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


#: The addresses a name is known to have now, resolved ahead of time (None: not known).
KnownAddresses = Callable[[str], tuple[str, ...] | None]


class Pool:
    """Keep-alive connections to one server (``scheme://host:port``). With ``known``, a new
    connection goes to an address of the host resolved ahead of time where there is one, so a
    slow or failing resolver does not hold requests up (the name still names the server: in the
    Host header and for TLS); otherwise the name is resolved for the connection."""

    def __init__(
        self,
        base_url: str,
        connect_seconds: float,
        max_age_seconds: float = MAX_AGE_SECONDS,
        known: KnownAddresses | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None
        )
        default = (parts.scheme == "https" and self.port == 443) or self.port == 80
        host_header = self.host if ":" not in self.host else f"[{self.host}]"
        self.host_header = (host_header if default else f"{host_header}:{self.port}").encode()
        self.connect_seconds = connect_seconds
        self.max_age_seconds = max_age_seconds
        self.known = known
        self.loop = asyncio.get_running_loop()
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.closing = False

    async def _connect(self, deadline: float | None) -> _Connection:
        seconds = self.connect_seconds
        if deadline is not None:
            seconds = min(seconds, deadline - self.loop.time())
        addresses = self.known(self.host) if self.known is not None else None
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    addresses[0] if addresses else self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError:
            raise ConnectTimeoutError(f"no connection within {seconds:.3g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from None
        return conn

    def _take_idle(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.idle_handle is not None:
                conn.idle_handle.cancel()
                conn.idle_handle = None
            transport = conn.transport
            if conn.closed or transport is None or transport.is_closing():
                continue
            return conn
        return None

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        deadline: float | None,
    ) -> Response:
        """Send a request and return once the response head is in (by ``deadline``, loop time).
        Raises ConnectError, ConnectTimeoutError, DisconnectedError, TimeoutError."""
        head = self._head(method, path, headers, len(body))
        for fresh in (False, True):
            conn = None if fresh else self._take_idle()
            reused = conn is not None
            if conn is None:
                conn = await self._connect(deadline)
            self.busy.add(conn)
            try:
                conn._reset()
                conn.head_request = method == "HEAD"
                assert conn.transport is not None
                conn.transport.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    conn.transport.write(body)
                while conn.state == _HEAD:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(deadline)
                return Response(conn)
            except DisconnectedError:
                self.discard(conn)
                # A kept-alive connection the server had closed: nothing was processed.
                if reused and not conn.got_bytes:
                    continue
                raise
            except BaseException:
                self.discard(conn)
                raise
        raise AssertionError("unreachable")

    def _head(self, method: str, path: str, headers: Mapping[str, str], length: int) -> bytes:
        lines = [
            f"{method} {self.prefix}{path} HTTP/1.1".encode(),
            b"Host: " + self.host_header,
        ]
        for name, value in headers.items():
            raw = value.encode("utf-8", "surrogateescape")
            if b"\r" in raw or b"\n" in raw or b"\0" in raw:
                continue  # never let a value split the request
            lines.append(name.encode("latin-1") + b": " + raw)
        if length or method in ("POST", "PUT", "PATCH"):
            lines.append(b"Content-Length: " + str(length).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def release(self, conn: _Connection) -> None:
        self.busy.discard(conn)
        if self.closing or conn.closed or self.loop.time() - conn.created >= self.max_age_seconds:
            self.discard(conn)
            return
        conn.idle_handle = self.loop.call_later(IDLE_SECONDS, self._expire_idle, conn)
        self.idle.append(conn)

    def _expire_idle(self, conn: _Connection) -> None:
        conn.idle_handle = None
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        self.discard(conn)

    def discard(self, conn: _Connection) -> None:
        self.busy.discard(conn)
        if conn.transport is not None and not conn.closed:
            conn.transport.close()

    async def close(self) -> None:
        self.closing = True
        for conn in [*self.idle, *self.busy]:
            if conn.idle_handle is not None:
                conn.idle_handle.cancel()
            self.discard(conn)
        self.idle.clear()
        await asyncio.sleep(0)  # let the transports close
