"""A tiny OpenAI-compatible server for the faults a real llama.cpp server cannot be made to show
on demand (fixed error statuses, slow first bytes, slow streams) and for load and overhead
measurements (it answers at once).

Playing an external provider: with ``api_key`` set it answers 401 to any request whose
``Authorization`` is not ``Bearer <api_key>`` (counting both), and with ``usage`` set its answers
report token usage as OpenAI's do (streams: a last event with ``usage`` when the request asks
for it with ``stream_options.include_usage``).

Run as a process: ``python -m support.fake_upstream`` (with ``tests`` on ``PYTHONPATH``); it prints
``{"port": N}`` once listening on 127.0.0.1. Behaviour is set at run time with
``POST /_control`` and what it saw is read with ``GET /_stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import selectors
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from zeta_router_dev.local.llama import set_parent_death_signal

MODEL = "fake-model"


class State:
    def __init__(self) -> None:
        self.status = 200  # status for inference requests
        self.delay = 0.0  # seconds before the response headers
        self.chunks = 3  # streamed chunks
        self.chunk_delay = 0.0  # seconds between streamed chunks
        self.answer: str | None = None  # fixed answer text (else an echo of the nonce)
        self.abort_after: int | None = None  # drop the connection after this many chunks
        self.no_done = False  # end streams without the data: [DONE] terminator
        # Non-streamed answers: "break" (headers, then part of the body, then the connection
        # drops), "garbage" (200, JSON content type, not JSON), "html" (200, text/html).
        self.body_fault: str | None = None
        self.hang = False  # never answer (until the client gives up)
        self.close_connections = False  # no keep-alive: every request on a new connection
        self.requests = 0
        self.nonces: Counter[str] = Counter()
        self.request_ids: Counter[str] = Counter()
        self.client_request_ids: Counter[str] = Counter()
        self.headers_seen: set[str] = set()
        self.models: Counter[str] = Counter()
        self.completed = 0
        self.cancelled = 0
        self.api_key: str | None = None  # the provider's key: others get 401
        self.authorized = 0
        self.unauthorized = 0
        self.usage: dict[str, int] | None = None  # usage each answer reports


def _nonce(body: dict[str, Any]) -> str:
    if isinstance(body.get("messages"), list) and body["messages"]:
        return str(body["messages"][-1].get("content", ""))
    return str(body.get("prompt", ""))


def build_app() -> web.Application:
    state = State()
    app = web.Application()

    @web.middleware
    async def no_keepalive(request: web.Request, handler: Any) -> web.StreamResponse:
        resp: web.StreamResponse = await handler(request)
        if state.close_connections and not resp.prepared:
            resp.force_close()
        return resp

    async def inference(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state.requests += 1
        nonce = _nonce(body)
        state.nonces[nonce] += 1
        state.request_ids[request.headers.get("X-Request-Id", "")] += 1
        state.headers_seen.update(request.headers.keys())
        if "X-Client-Request-Id" in request.headers:
            state.client_request_ids[request.headers["X-Client-Request-Id"]] += 1
        state.models[str(body.get("model"))] += 1
        if state.api_key is not None:
            if request.headers.get("Authorization") != f"Bearer {state.api_key}":
                state.unauthorized += 1
                return web.json_response(
                    {"error": {"message": "invalid API key", "type": "invalid_request_error"}},
                    status=401,
                )
            state.authorized += 1
        chat = request.path.endswith("/chat/completions")
        try:
            if state.hang:
                await asyncio.Event().wait()
            if state.delay:
                await asyncio.sleep(state.delay)
            if state.status != 200:
                return web.json_response(
                    {"error": {"message": f"fake status {state.status}", "type": "fake"}},
                    status=state.status,
                )
            text = state.answer if state.answer is not None else f"echo: {nonce}"
            if body.get("stream"):
                resp = web.StreamResponse()
                resp.content_type = "text/event-stream"
                if state.close_connections:
                    resp.force_close()
                await resp.prepare(request)
                for i in range(state.chunks):
                    if state.abort_after is not None and i == state.abort_after:
                        assert request.transport is not None
                        request.transport.close()
                        return resp
                    piece = text if i == 0 else f" {i}"
                    choice = (
                        {"index": 0, "delta": {"content": piece}}
                        if chat
                        else {"index": 0, "text": piece}
                    )
                    event = {"id": "x", "model": MODEL, "choices": [choice]}
                    await resp.write(f"data: {json.dumps(event)}\n\n".encode())
                    if state.chunk_delay:
                        await asyncio.sleep(state.chunk_delay)
                if state.usage is not None and (body.get("stream_options") or {}).get(
                    "include_usage"
                ):
                    event = {"id": "x", "model": MODEL, "choices": [], "usage": state.usage}
                    await resp.write(f"data: {json.dumps(event)}\n\n".encode())
                if not state.no_done:
                    await resp.write(b"data: [DONE]\n\n")
                await resp.write_eof()
                state.completed += 1
                return resp
            if state.body_fault == "break":
                resp = web.StreamResponse(headers={"Content-Type": "application/json"})
                resp.content_length = 1000
                await resp.prepare(request)
                await resp.write(b'{"id": "x", "choices": [')
                assert request.transport is not None
                request.transport.close()
                return resp
            if state.body_fault == "garbage":
                return web.Response(body=b"<html>oops", content_type="application/json")
            if state.body_fault == "html":
                return web.Response(text="<html>proxy error page</html>", content_type="text/html")
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": text}}
                if chat
                else {"index": 0, "text": text}
            )
            state.completed += 1
            answer: dict[str, Any] = {
                "id": "x",
                "object": "chat.completion",
                "model": MODEL,
                "choices": [choice],
            }
            if state.usage is not None:
                answer["usage"] = state.usage
            return web.json_response(answer)
        except (asyncio.CancelledError, ConnectionResetError):
            state.cancelled += 1
            raise

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, status=200 if state.status == 200 else 503)

    async def control(request: web.Request) -> web.Response:
        for k, v in (await request.json()).items():
            setattr(state, k, v)
        return web.json_response({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": state.requests,
                "completed": state.completed,
                "cancelled": state.cancelled,
                "nonces": dict(state.nonces),
                "request_ids": dict(state.request_ids),
                "client_request_ids": dict(state.client_request_ids),
                "headers_seen": sorted(state.headers_seen),
                "models": dict(state.models),
                "authorized": state.authorized,
                "unauthorized": state.unauthorized,
            }
        )

    app.middlewares.append(no_keepalive)
    app.router.add_post("/v1/chat/completions", inference)
    app.router.add_post("/v1/completions", inference)
    app.router.add_get("/health", health)
    app.router.add_post("/_control", control)
    app.router.add_get("/_stats", stats)
    return app


async def _main(port: int, tls: tuple[str, str] | None = None) -> None:
    runner = web.AppRunner(build_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    context = None
    if tls is not None:  # https, as a hosted provider is reached
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=2048, ssl_context=context)
    await site.start()
    bound = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    sys.stdout.write(json.dumps({"port": bound}) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert", help="serve https with this certificate (and --tls-key)")
    parser.add_argument("--tls-key")
    args = parser.parse_args()
    import uvloop

    uvloop.run(_main(args.port, (args.tls_cert, args.tls_key) if args.tls_cert else None))


# -- the parent's handle -------------------------------------------------------------------------


@dataclass
class FakeUpstream:
    process: subprocess.Popen[bytes]
    port: int
    ca: Path | None = None
    """The CA of its certificate when it serves https."""

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    def _context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else None

    def control(self, **settings: Any) -> None:
        req = urllib.request.Request(
            self.url + "/_control",
            data=json.dumps(settings).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(req, timeout=5, context=self._context()).read()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_stats", timeout=5, context=self._context()) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start_fake_upstream(
    log_path: Path | None = None,
    timeout: float = 20.0,
    port: int = 0,
    tls: tuple[Path, Path, Path] | None = None,
) -> FakeUpstream:
    """Start the fake upstream as a process on 127.0.0.1 (``port`` 0: a free one); returns once
    it listens. ``tls``: (certificate, key, CA) to serve https with."""
    tls_args = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
    tests_dir = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=tests_dir + os.pathsep + os.environ.get("PYTHONPATH", ""))
    stderr = log_path.open("ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "support.fake_upstream", "--port", str(port), *tls_args],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        env=env,
        preexec_fn=set_parent_death_signal,
    )
    if log_path:
        stderr.close()  # type: ignore[union-attr]
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        line = b""
        while b"\n" not in line and time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=0.2):
                chunk = os.read(proc.stdout.fileno(), 1024)
                if not chunk:
                    break
                line += chunk
    proc.stdout.close()
    if b"\n" not in line:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise RuntimeError("the fake upstream did not start")
    port = int(json.loads(line.split(b"\n")[0])["port"])
    return FakeUpstream(proc, port, tls[2] if tls else None)


if __name__ == "__main__":
    main()
