"""Relaying a tier's answer to the client: streams are passed through event by event as they
arrive (never buffered), non-streamed answers are read whole; in both the ``model`` field is
rewritten to the name the client asked for.

Every way a relay can fail once a tier has answered is handled in :func:`relay`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
from aiohttp import web

from zeta_router.router.config import RuntimeConfig, Tier
from zeta_router.router.decision import Decision
from zeta_router.router.errors import JSON_TYPE, ApiError
from zeta_router.router.metrics import NO_TIER, RouterMetrics
from zeta_router.router.shadow import answer_text, delta_text

log = logging.getLogger("zeta_router.router")

#: Longest SSE line held back while waiting for its end; longer ones are passed on unmodified.
MAX_HELD_LINE = 1 << 20


class StreamAbortedError(ConnectionResetError):
    """A stream broke after bytes were sent; the client connection was closed."""


async def relay(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    cfg: RuntimeConfig,
    d: Decision,
    tier: Tier,
    sent: float,
    metrics: RouterMetrics,
) -> tuple[web.StreamResponse, float]:
    """Pass the upstream answer to the client; returns it and the router time spent on it."""
    total_deadline = sent + cfg.source.timeouts.total_seconds
    ctype = upstream.headers.get("Content-Type", "")
    first: float | None = None
    try:
        if ctype.startswith("text/event-stream"):
            resp = web.StreamResponse(status=upstream.status)
            resp.content_type = "text/event-stream"
            resp.headers["Cache-Control"] = "no-cache"
            decision_headers(resp, d, tier)
            await resp.prepare(request)
            rewriter = SseRewriter(d.requested_model, d.shadow_text if d.shadow else None)
            try:
                async with asyncio.timeout(max(0.0, total_deadline - time.perf_counter())):
                    async for chunk in upstream.content.iter_any():
                        if first is None:
                            first = time.perf_counter()
                            metrics.observe(metrics.ttft, first - sent, tier.name)
                        out = rewriter.feed(chunk)
                        if out:
                            await resp.write(out)
                    tail = rewriter.flush()
                    if tail:
                        await resp.write(tail)
            except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
                # Bytes already reached the client: no retry and no error body is possible.
                # Dropping the connection tells the client the stream is incomplete.
                log.warning(
                    "stream from tier broken",
                    extra={
                        "event": "stream_broken",
                        "request_id": d.request_id,
                        "tier": tier.name,
                        "detail": f"{type(exc).__name__}: {exc}",
                    },
                )
                if request.transport is not None:
                    request.transport.close()
                raise StreamAbortedError from None
            await resp.write_eof()
            extra = 0.0
        else:
            parts = []
            try:
                async with asyncio.timeout(max(0.0, total_deadline - time.perf_counter())):
                    async for chunk in upstream.content.iter_any():
                        if first is None:
                            first = time.perf_counter()
                            metrics.observe(metrics.ttft, first - sent, tier.name)
                        parts.append(chunk)
            except TimeoutError:
                raise ApiError(
                    504,
                    f"tier {tier.name} did not finish within "
                    f"{cfg.source.timeouts.total_seconds:g}s",
                    code="upstream_timeout",
                ) from None
            except (aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
                raise ApiError(
                    502,
                    f"tier {tier.name} broke off its answer: {type(exc).__name__}",
                    code="upstream_broken",
                ) from None
            t_rewrite = time.perf_counter()
            data = b"".join(parts)
            if upstream.status == 200 and ctype.startswith(JSON_TYPE):
                data = rewrite_model(data, d.requested_model, d.shadow_text if d.shadow else None)
            resp = web.Response(status=upstream.status, body=data)
            resp.headers["Content-Type"] = ctype or JSON_TYPE
            decision_headers(resp, d, tier)
            extra = time.perf_counter() - t_rewrite
        metrics.observe(metrics.duration, time.perf_counter() - sent, tier.name)
        return resp, extra
    finally:
        upstream.close()


def decision_headers(resp: web.StreamResponse, d: Decision, tier: Tier | None) -> None:
    h = resp.headers
    h["x-zeta-tier"] = tier.name if tier is not None else NO_TIER
    h["x-zeta-score"] = f"{d.score:.4f}"
    h["x-zeta-context"] = d.context.name
    h["x-request-id"] = d.request_id
    if d.client_request_id is not None:
        h["x-client-request-id"] = d.client_request_id
    if d.session_token is not None:
        h["x-zeta-session"] = d.session_token


def rewrite_model(data: bytes, model: str, collect: list[str] | None) -> bytes:
    try:
        obj = json.loads(data)
    except ValueError:
        return data
    if not isinstance(obj, dict):
        return data
    if collect is not None:
        text = answer_text(obj)
        if text is not None:
            collect.append(text)
    if "model" not in obj:
        return data
    obj["model"] = model
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class SseRewriter:
    """Rewrites the ``model`` of each ``data:`` event of a stream, line by line, forwarding each
    complete line at once and holding back only an unfinished one."""

    __slots__ = ("_collect", "_held", "_model")

    def __init__(self, model: str, collect: list[str] | None) -> None:
        self._model = model
        self._collect = collect
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk if self._held else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > MAX_HELD_LINE:
                self._held = b""
                return data
            self._held = data
            return b""
        self._held = data[cut + 1 :]
        lines = data[: cut + 1].split(b"\n")
        return b"\n".join(self._line(line) for line in lines)

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return self._line(held) if held else b""

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:"):
            return line
        payload = line[5:].strip()
        if not payload.startswith(b"{"):
            return line
        try:
            event = json.loads(payload)
        except ValueError:
            return line
        if not isinstance(event, dict):
            return line
        if self._collect is not None:
            self._collect.append(delta_text(event))
        if "model" not in event:
            return line
        event["model"] = self._model
        cr = b"\r" if line.endswith(b"\r") else b""
        return (
            b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + cr
        )
