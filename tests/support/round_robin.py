"""A TCP round-robin front, as kube-proxy spreads a Service's connections over its endpoints:
each new connection goes to the next backend. Clients that want each request on the next
replica open a connection per request.

Runs in threads of the test process on 127.0.0.1; :meth:`RoundRobin.close` stops it.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections import Counter


class RoundRobin:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.connections: Counter[int] = Counter()  # per backend index
        self._next = itertools.cycle(range(len(backends)))
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            i = next(self._next)
            self.connections[i] += 1
            try:
                upstream = socket.create_connection(self.backends[i], timeout=5)
            except OSError:
                client.close()  # as a Service with a dead endpoint: the client sees a reset
                continue
            upstream.settimeout(None)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with contextlib.suppress(OSError):
            src.close()
