"""A forward proxy for tests: answers HTTP ``CONNECT host:port`` (what clients send for an
``https://`` URL through ``$HTTPS_PROXY``) by piping bytes to that address, and counts the
tunnels it opened. Listens on 127.0.0.1 and tunnels to 127.0.0.1 only.

    with ConnectProxy() as proxy:
        os.environ["HTTPS_PROXY"] = proxy.url
        ...
        assert proxy.connects
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from types import TracebackType
from typing import Any


class ConnectProxy:
    def __init__(self) -> None:
        self.connects: list[str] = []
        """``host:port`` of each tunnel, in order."""
        self.refused: list[str] = []
        lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(4096).decode("latin-1").strip()
                while self.rfile.readline(4096) not in (b"\r\n", b"\n", b""):
                    pass  # the request's headers (Host, Proxy-Authorization, ...)
                method, _, rest = line.partition(" ")
                target = rest.split(" ", 1)[0]
                host, _, port = target.rpartition(":")
                if method != "CONNECT" or host.strip("[]") not in ("127.0.0.1", "localhost"):
                    with lock:
                        outer.refused.append(line)
                    self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                try:
                    upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
                except OSError:
                    self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    return
                with lock:
                    outer.connects.append(target)
                self.wfile.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                self.wfile.flush()
                upstream.settimeout(None)
                self.connection.settimeout(None)
                pump = threading.Thread(target=_pipe, args=(upstream, self.connection), daemon=True)
                pump.start()
                _pipe(self.connection, upstream)
                pump.join(timeout=5)
                upstream.close()

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ConnectProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ConnectProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _pipe(src: socket.socket, dst: socket.socket, *_: Any) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
