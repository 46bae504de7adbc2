"""Relaying a tier's answer to the client: streams are passed through event by event as they
arrive (never buffered), non-streamed answers are read whole; in both the ``model`` field is
rewritten to the name the client asked for.

Every way an answer can fail once its headers are in is decided here, in two kinds:

- before anything reached the client (a non-streamed answer is read whole first; a stream is
  held until its first bytes): :class:`TierError` is raised and the request may fail over;
- after a stream started: the stream ends with an OpenAI-style error event
  (``data: {"error": {...}}``, what the openai client raises on) instead of ``data: [DONE]``,
  and :func:`relay` returns the failure for the caller to count against the tier.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Protocol

from aiohttp import web

from zeta_router.router.config import Tier
from zeta_router.router.decision import Decision
from zeta_router.router.errors import JSON_TYPE, error_body
from zeta_router.router.http1 import BodyError, Response
from zeta_router.router.metrics import NO_TIER, RouterMetrics
from zeta_router.router.shadow import answer_text, delta_text
from zeta_router.router.sleep import ASLEEP_HEADER
from zeta_router.router.upstream import TierError

log = logging.getLogger("zeta_router.router")

#: Longest SSE line held back while waiting for its end; longer ones are passed on unmodified.
MAX_HELD_LINE = 1 << 20
SSE_TYPE = "text/event-stream"
_DONE = b"[DONE]"
#: What breaks an upstream body while it is read.
BODY_ERRORS = (BodyError, OSError)


async def relay(
    request: web.Request,
    upstream: Response,
    d: Decision,
    tier: Tier,
    sent: float,
    deadline: float,
    metrics: RouterMetrics,
) -> tuple[web.StreamResponse, TierError | None, float]:
    """Pass the upstream answer to the client. Returns the response, the tier's failure if the
    answer broke after it started reaching the client, and the router's own time spent.
    Raises TierError while nothing has reached the client. ``deadline`` is on the event
    loop's clock (``loop.time()``); ``sent`` on ``time.perf_counter()``."""
    ctype = upstream.headers.get("content-type", "")
    if ctype.startswith(SSE_TYPE):
        return await _relay_stream(request, upstream, d, tier, sent, deadline, metrics)
    return await _relay_whole(upstream, ctype, d, tier, sent, deadline, metrics)


async def _relay_whole(
    upstream: Response,
    ctype: str,
    d: Decision,
    tier: Tier,
    sent: float,
    deadline: float,
    metrics: RouterMetrics,
) -> tuple[web.StreamResponse, TierError | None, float]:
    try:
        if upstream.complete:  # the whole body came with the headers: nothing to wait for
            metrics.observe(metrics.ttft, time.perf_counter() - sent, tier.name)
            data = upstream.read_nowait()
        else:
            parts = []
            first = True
            async for chunk in upstream.chunks(deadline):
                if first:
                    first = False
                    metrics.observe(metrics.ttft, time.perf_counter() - sent, tier.name)
                parts.append(chunk)
            data = b"".join(parts)
    except TimeoutError:
        raise TierError("timeout", "the answer did not finish within totalSeconds") from None
    except BODY_ERRORS as exc:
        raise TierError("broken", f"the answer broke off: {type(exc).__name__}") from None
    t_rewrite = time.perf_counter()
    if upstream.status == 200:
        media = ctype.split(";", 1)[0].strip().lower()
        if media and media != JSON_TYPE and not media.endswith("+json"):
            raise TierError("bad_response", f"a 200 answer of Content-Type {media!r}, not JSON")
        data = rewrite_model(data, d.requested_model, d.shadow_text if d.shadow else None, d)
    resp = web.Response(status=upstream.status, body=data)
    resp.headers["Content-Type"] = ctype or JSON_TYPE
    decision_headers(resp, d, tier)
    metrics.observe(metrics.duration, time.perf_counter() - sent, tier.name)
    return resp, None, time.perf_counter() - t_rewrite


async def _relay_stream(
    request: web.Request,
    upstream: Response,
    d: Decision,
    tier: Tier,
    sent: float,
    deadline: float,
    metrics: RouterMetrics,
) -> tuple[web.StreamResponse, TierError | None, float]:
    rewriter = SseRewriter(d.requested_model, d.shadow_text if d.shadow else None, d)
    chunks = upstream.chunks(deadline)
    # Nothing is sent before the tier's first bytes: until then the request can fail over.
    try:
        first = await anext(chunks, b"")
    except TimeoutError:
        raise TierError("timeout", "no event within totalSeconds") from None
    except BODY_ERRORS as exc:
        raise TierError("broken", f"the stream broke off: {type(exc).__name__}") from None
    if not first:
        raise TierError("bad_response", "an event stream without any event")
    metrics.observe(metrics.ttft, time.perf_counter() - sent, tier.name)
    resp = web.StreamResponse(status=upstream.status)
    resp.content_type = SSE_TYPE
    resp.headers["Cache-Control"] = "no-cache"
    decision_headers(resp, d, tier)
    await resp.prepare(request)
    failure: TierError | None = None
    try:
        out = rewriter.feed(first)
        if out:
            await resp.write(out)
        async for chunk in chunks:
            out = rewriter.feed(chunk)
            if out:
                await resp.write(out)
        tail = rewriter.flush()
        if tail:
            await resp.write(tail)
    except TimeoutError:
        failure = TierError("timeout", "the stream did not finish within totalSeconds")
    except BODY_ERRORS as exc:
        failure = TierError("broken", f"the stream broke off: {type(exc).__name__}")
    else:
        if upstream.status == 200 and not rewriter.done:
            failure = TierError("truncated", "the stream ended without data: [DONE]")
    if failure is not None:
        log.warning(
            "stream from tier broken",
            extra={
                "event": "stream_broken",
                "request_id": d.request_id,
                "tier": tier.name,
                "reason": failure.reason,
                "detail": failure.detail,
            },
        )
        code = "upstream_timeout" if failure.reason == "timeout" else "upstream_broken"
        message = f"tier {tier.name} did not complete the answer: {failure.detail}"
        event = error_body(message, type_="server_error", code=code)
        # Ends the event (a partial line before it is cut off) and then the stream: the
        # openai client raises an APIError on an event that carries "error".
        await resp.write(b"\n\ndata: " + event + b"\n\n")
    await resp.write_eof()
    metrics.observe(metrics.duration, time.perf_counter() - sent, tier.name)
    return resp, failure, 0.0


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
    if d.asleep is not None:
        h[ASLEEP_HEADER] = d.asleep


def _dumps(obj: object) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate escape: keep it escaped
        return json.dumps(obj, separators=(",", ":")).encode()


class UsageSink(Protocol):
    usage: tuple[int, int] | None


def usage_of(obj: dict[str, Any]) -> tuple[int, int] | None:
    """``(prompt_tokens, completion_tokens)`` of an answer or stream event that reports its
    ``usage`` (None: it does not, or not as numbers)."""
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return max(0, prompt), max(0, completion)


def rewrite_model(
    data: bytes, model: str, collect: list[str] | None, usage: UsageSink | None = None
) -> bytes:
    """A 200 JSON answer with ``model`` set to what the client asked for (and its token
    ``usage`` kept on ``usage``). Raises TierError when the body is not a JSON object."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise TierError("bad_response", "a 200 answer whose body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise TierError("bad_response", "a 200 answer whose body is not a JSON object")
    if collect is not None:
        text = answer_text(obj)
        if text is not None:
            collect.append(text)
    if usage is not None and "usage" in obj:
        usage.usage = usage_of(obj)
    if "model" not in obj:
        return data
    obj["model"] = model
    return _dumps(obj)


class SseRewriter:
    """Rewrites the ``model`` of each ``data:`` event of a stream, line by line, forwarding each
    complete line at once and holding back only an unfinished one. ``done`` tells whether the
    ``data: [DONE]`` terminator went through."""

    __slots__ = ("_collect", "_held", "_model", "_usage", "done")

    def __init__(
        self, model: str, collect: list[str] | None, usage: UsageSink | None = None
    ) -> None:
        self._model = model
        self._collect = collect
        self._usage = usage
        self._held = b""
        self.done = False

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
            if payload == _DONE:
                self.done = True
            return line
        try:
            event = json.loads(payload)
        except (ValueError, RecursionError):
            return line
        if not isinstance(event, dict):
            return line
        if self._collect is not None:
            self._collect.append(delta_text(event))
        if self._usage is not None and event.get("usage"):  # (the last event, when asked for)
            self._usage.usage = usage_of(event)
        if "model" not in event:
            return line
        event["model"] = self._model
        cr = b"\r" if line.endswith(b"\r") else b""
        return b"data: " + _dumps(event) + cr
