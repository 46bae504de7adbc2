"""The router's HTTP application: OpenAI-compatible endpoints, the routing decision, and the
relay of upstream answers (streams are passed through as they arrive, never buffered).

:class:`Router` holds the state that outlives a request (configuration, clients, sessions,
metrics); :func:`build_app` wires it into an aiohttp application.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from zeta_router.router.config import Context, RuntimeConfig, Tier
from zeta_router.router.errors import ApiError, error_body
from zeta_router.router.metrics import NO_TIER, RouterMetrics
from zeta_router.router.shadow import (
    JsonlLog,
    agreement,
    answer_text,
    delta_text,
    shadow_record,
)
from zeta_router.router.stickiness import SessionStore
from zeta_router.router.ttlcache import TTLCache
from zeta_router.router.upstream import (
    BREAKER_STATUSES,
    FAILOVER_STATUSES,
    TierError,
    Upstreams,
    attempt_order,
)
from zeta_router.router.validation import Kind, parse_body
from zeta_router.scoring import features

log = logging.getLogger("zeta_router.router")
access_log = logging.getLogger("zeta_router.router.access")

ROUTER_KEY: web.AppKey[Router] = web.AppKey("router")

#: Request headers passed on to the model server (everything else stays at the router).
FORWARDED_HEADERS = ("Authorization", "OpenAI-Organization", "OpenAI-Project", "traceparent")
#: Longest SSE line held back while waiting for its end; longer ones are passed on unmodified.
MAX_HELD_LINE = 1 << 20
RECENT_REQUESTS = 100_000
RECENT_TTL_SECONDS = 3600.0
SHADOW_CONCURRENCY = 4
JSON_TYPE = "application/json"


@dataclass
class Options:
    """Process-level settings from the command line (not part of the routing file)."""

    log_prompts: bool = False
    access_log: bool = False
    shadow_log: Path | None = None
    shadow_log_max_bytes: int = 10 * 1024 * 1024
    seed: int | None = None


@dataclass(slots=True)
class Decision:
    request_id: str
    context: Context
    score: float
    tier: int  # index into config.tiers
    forced: bool
    requested_model: str
    stream: bool
    shadow: bool = False
    shadow_text: list[str] = field(default_factory=list)
    served: Tier | None = None


class Router:
    def __init__(
        self,
        config: RuntimeConfig,
        options: Options | None = None,
        metrics: RouterMetrics | None = None,
    ) -> None:
        self.config = config
        self.options = options or Options()
        self.metrics = metrics or RouterMetrics()
        self.metrics.config_generation.set(config.generation)
        self._export_thresholds(config)
        st = config.source.stickiness
        self.sessions = SessionStore(st.max_sessions, st.ttl_seconds)
        self.recent: TTLCache[tuple[str, str]] = TTLCache(RECENT_REQUESTS, RECENT_TTL_SECONDS)
        self.upstreams: Upstreams | None = None  # created on the running loop (startup)
        self.draining = False
        self._random = random.Random(self.options.seed)
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._shadow_slots = asyncio.Semaphore(SHADOW_CONCURRENCY)
        self._shadow_log = (
            JsonlLog(self.options.shadow_log, self.options.shadow_log_max_bytes)
            if self.options.shadow_log
            else None
        )

    # -- configuration ---------------------------------------------------------------------

    def _export_thresholds(self, config: RuntimeConfig) -> None:
        self.metrics.set_thresholds(
            {c.name: list(c.selector.cuts) for c in config.contexts.values()},
            [t.name for t in config.tiers],
        )

    def set_config(self, config: RuntimeConfig) -> None:
        old = self.config
        self.config = config
        st = config.source.stickiness
        self.sessions.resize(st.max_sessions, st.ttl_seconds)
        if self.upstreams is not None:
            self.upstreams.reconfigure(config)
        self.metrics.config_generation.set(config.generation)
        self._export_thresholds(config)
        log.info(
            "routing config applied",
            extra={
                "event": "config_applied",
                "generation": config.generation,
                "previous_generation": old.generation,
                "tiers": [t.name for t in config.tiers],
                "thresholds": {c.name: list(c.selector.cuts) for c in config.contexts.values()},
            },
        )

    def config_error(self, reason: str) -> None:
        self.metrics.config_errors.inc()
        log.error(
            "routing config rejected; keeping the last good one",
            extra={
                "event": "config_rejected",
                "reason": reason,
                "generation": self.config.generation,
            },
        )

    async def start(self) -> None:
        self.upstreams = Upstreams(self.config)

    async def stop(self) -> None:
        for t in list(self._shadow_tasks):
            t.cancel()
        await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
        if self.upstreams is not None:
            await self.upstreams.close()

    # -- deciding ------------------------------------------------------------------------------

    def decide(self, request: web.Request, body: dict[str, Any], cfg: RuntimeConfig) -> Decision:
        requested = body.get("model") or cfg.router_name
        context = self._context(request, requested, cfg)
        score = context.scorer.score_body(body)
        tier = context.selector.select(score)
        forced_name = request.headers.get("X-Zeta-Tier")
        forced = forced_name is not None
        if forced_name is not None:
            if not cfg.source.allow_force_tier:
                raise ApiError(
                    403,
                    "forcing a tier with X-Zeta-Tier is disabled by the routing config "
                    "(allowForceTier: false)",
                    code="force_tier_disabled",
                    param="X-Zeta-Tier",
                )
            forced_tier = cfg.tier_by_name.get(forced_name.strip())
            if forced_tier is None:
                raise ApiError(
                    400,
                    f"unknown tier {forced_name!r} in X-Zeta-Tier; tiers: "
                    + ", ".join(t.name for t in cfg.tiers),
                    code="unknown_tier",
                    param="X-Zeta-Tier",
                )
            tier = forced_tier.index
        else:
            session = request.headers.get("X-Zeta-Session") or body.get("user")
            # A session's floor may predate a reload that removed tiers.
            tier = min(self.sessions.apply(session, tier, time.monotonic()), len(cfg.tiers) - 1)
        request_id = _request_id(request)
        shadow = (
            not forced
            and cfg.source.shadow_sample_rate > 0.0
            and tier < len(cfg.tiers) - 1
            and self._random.random() < cfg.source.shadow_sample_rate
        )
        return Decision(
            request_id=request_id,
            context=context,
            score=score,
            tier=tier,
            forced=forced,
            requested_model=requested,
            stream=body.get("stream") is True,
            shadow=shadow,
        )

    @staticmethod
    def _context(request: web.Request, model: str, cfg: RuntimeConfig) -> Context:
        name = request.headers.get("X-Zeta-Context")
        param = "X-Zeta-Context"
        if name is None:
            prefix = cfg.router_name + "/"
            if model.startswith(prefix):
                name, param = model[len(prefix) :], "model"
            else:
                return cfg.contexts[cfg.default_context]
        ctx = cfg.contexts.get(name.strip())
        if ctx is None:
            raise ApiError(
                400,
                f"unknown context {name!r}; valid contexts: " + ", ".join(cfg.contexts),
                code="unknown_context",
                param=param,
            )
        return ctx

    # -- serving -------------------------------------------------------------------------------

    async def handle_completion(
        self, request: web.Request, kind: Kind, path: str
    ) -> web.StreamResponse:
        t0 = time.perf_counter()
        cfg = self.config
        context_name = cfg.default_context
        try:
            _check_content_type(request)
            raw = await _read_body(request, cfg.source.max_body_bytes)
            body = parse_body(raw, kind)
            d = self.decide(request, body, cfg)
        except ApiError as exc:
            # Bad requests are counted too: a sudden rise is worth an alert.
            if exc.param in ("X-Zeta-Context", "model") and exc.code == "unknown_context":
                context_name = "unknown"
            self.metrics.count_request(context_name, NO_TIER, exc.status)
            raise
        self.metrics.observe(self.metrics.decision_score, d.score, d.context.name)
        headers = {"X-Request-Id": d.request_id}
        for h in FORWARDED_HEADERS:
            v = request.headers.get(h)
            if v is not None:
                headers[h] = v
        headers["Content-Type"] = JSON_TYPE
        overhead = time.perf_counter() - t0
        code = 499  # the client went away before an answer was ready
        try:
            response, overhead = await self._forward(request, cfg, d, body, path, headers, overhead)
            code = response.status
            return response
        except ApiError as exc:
            code = exc.status
            raise
        except _StreamAbortedError:
            code = 502
            raise
        finally:
            served = d.served
            self.metrics.count_request(d.context.name, served.name if served else NO_TIER, code)
            self.metrics.observe(self.metrics.overhead, overhead)
            if served is not None:
                self.recent.put(d.request_id, (d.context.name, served.name), time.monotonic())
            if self.options.access_log:
                self._access(request, d, body, served, code, t0)

    async def _forward(
        self,
        request: web.Request,
        cfg: RuntimeConfig,
        d: Decision,
        body: dict[str, Any],
        path: str,
        headers: dict[str, str],
        overhead: float,
    ) -> tuple[web.StreamResponse, float]:
        upstreams = self.upstreams
        assert upstreams is not None, "router not started"
        order = attempt_order(d.tier, len(cfg.tiers), cfg.source.failover and not d.forced)
        failures: list[tuple[Tier, TierError]] = []
        prev: tuple[Tier, str] | None = None
        payloads: dict[str | None, bytes] = {}
        for idx in order:
            tier = cfg.tiers[idx]
            breaker = upstreams.breaker(tier)
            if prev is not None:
                self.metrics.failover(prev[0].name, tier.name, prev[1])
            if len(order) > 1 and not breaker.allow(time.monotonic()):
                failure = TierError("circuit_open", "skipped: circuit breaker open")
                failures.append((tier, failure))
                prev = (tier, failure.reason)
                continue
            t_build = time.perf_counter()
            payload = payloads.get(tier.model)
            if payload is None:
                payload = payloads[tier.model] = _upstream_payload(body, tier.model)
            overhead += time.perf_counter() - t_build
            self.metrics.inflight_add(tier.name, 1)
            sent = time.perf_counter()
            try:
                try:
                    resp = await upstreams.open(tier, path, payload, headers)
                except TierError as f:
                    breaker.failure(time.monotonic())
                    failures.append((tier, f))
                    prev = (tier, f.reason)
                    _log_tier_failure(d.request_id, tier, f)
                    continue
                except BaseException:
                    breaker.release()
                    raise
                if resp.status in FAILOVER_STATUSES and len(order) > 1:
                    detail = await _error_detail(resp)
                    if resp.status in BREAKER_STATUSES:
                        breaker.failure(time.monotonic())
                    else:
                        breaker.release()
                    err = TierError(f"http_{resp.status}", detail, resp.status)
                    failures.append((tier, err))
                    prev = (tier, err.reason)
                    _log_tier_failure(d.request_id, tier, err)
                    continue
                if resp.status < 500:
                    breaker.success()
                else:
                    breaker.release()
                d.served = tier
                response, extra = await self._relay(request, resp, cfg, d, tier, sent)
                if d.shadow and response.status == 200:
                    self._start_shadow(cfg, d, body, tier)
                return response, overhead + extra
            finally:
                self.metrics.inflight_add(tier.name, -1)
        return self._all_failed(cfg, d, failures), overhead

    def _all_failed(
        self, cfg: RuntimeConfig, d: Decision, failures: list[tuple[Tier, TierError]]
    ) -> web.Response:
        upstreams = self.upstreams
        assert upstreams is not None
        now = time.monotonic()
        waits = [upstreams.breaker(t).retry_in(now) for t, _ in failures]
        retry_after = max(1, math.ceil(min(waits, default=1.0)))
        summary = "; ".join(f"{t.name}: {f.detail}" for t, f in failures)
        log.error(
            "no tier could serve the request",
            extra={"event": "all_tiers_failed", "request_id": d.request_id, "failures": summary},
        )
        statuses = {f.status for _, f in failures}
        if statuses == {429}:
            status, code = 429, "tiers_overloaded"
            message = f"every tier is overloaded ({summary}); retry later"
        elif len(failures) == 1 and failures[0][1].reason == "timeout":
            status, code = 504, "upstream_timeout"
            message = f"tier {failures[0][0].name} did not answer in time ({summary})"
        else:
            status, code = 503, "no_tier_available"
            message = f"no tier is available to serve this request ({summary}); retry later"
        err = ApiError(status, message, code=code, headers={"Retry-After": str(retry_after)})
        resp = _error_response(err)
        _decision_headers(resp, cfg, d, None)
        return resp

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        cfg: RuntimeConfig,
        d: Decision,
        tier: Tier,
        sent: float,
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
                _decision_headers(resp, cfg, d, tier)
                await resp.prepare(request)
                rewriter = _SseRewriter(d.requested_model, d.shadow_text if d.shadow else None)
                try:
                    async with asyncio.timeout(max(0.0, total_deadline - time.perf_counter())):
                        async for chunk in upstream.content.iter_any():
                            if first is None:
                                first = time.perf_counter()
                                self.metrics.observe(self.metrics.ttft, first - sent, tier.name)
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
                    raise _StreamAbortedError from None
                await resp.write_eof()
                extra = 0.0
            else:
                parts = []
                try:
                    async with asyncio.timeout(max(0.0, total_deadline - time.perf_counter())):
                        async for chunk in upstream.content.iter_any():
                            if first is None:
                                first = time.perf_counter()
                                self.metrics.observe(self.metrics.ttft, first - sent, tier.name)
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
                    data = _rewrite_model(
                        data, d.requested_model, d.shadow_text if d.shadow else None
                    )
                resp = web.Response(status=upstream.status, body=data)
                resp.headers["Content-Type"] = ctype or JSON_TYPE
                _decision_headers(resp, cfg, d, tier)
                extra = time.perf_counter() - t_rewrite
            self.metrics.observe(self.metrics.duration, time.perf_counter() - sent, tier.name)
            return resp, extra
        finally:
            upstream.close()

    # -- shadow sampling ---------------------------------------------------------------------------

    def _start_shadow(
        self, cfg: RuntimeConfig, d: Decision, body: dict[str, Any], tier: Tier
    ) -> None:
        if self._shadow_slots.locked():
            log.debug(
                "shadow request dropped: too many in flight", extra={"event": "shadow_dropped"}
            )
            return
        task = asyncio.get_running_loop().create_task(self._shadow(cfg, d, body, tier))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(
        self, cfg: RuntimeConfig, d: Decision, body: dict[str, Any], tier: Tier
    ) -> None:
        upstreams = self.upstreams
        assert upstreams is not None
        larger = cfg.tiers[tier.index + 1]
        shadow_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        payload = _upstream_payload(shadow_body, larger.model)
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        async with self._shadow_slots:
            try:
                resp = await upstreams.open(
                    larger, path, payload, {"Content-Type": JSON_TYPE, "X-Request-Id": d.request_id}
                )
                async with resp:
                    if resp.status != 200:
                        return
                    other = answer_text(await resp.json(content_type=None))
            except (TierError, aiohttp.ClientError, ValueError, TimeoutError) as exc:
                log.info(
                    "shadow request failed", extra={"event": "shadow_failed", "detail": str(exc)}
                )
                return
        if other is None:
            return
        mine = "".join(d.shadow_text)
        value, method = agreement(mine, other)
        self.metrics.observe(self.metrics.shadow_agreement, value, d.context.name)
        if self._shadow_log is not None:
            prompt = features.request_text(body)[0] if self.options.log_prompts else None
            rec = shadow_record(
                request_id=d.request_id,
                context=d.context.name,
                score=d.score,
                tier=tier.name,
                shadow_tier=larger.name,
                value=value,
                method=method,
                prompt=prompt,
                answers=(mine, other) if self.options.log_prompts else None,
            )
            try:
                self._shadow_log.append(rec)
            except OSError as exc:
                log.warning(
                    "cannot write the shadow log",
                    extra={"event": "shadow_log_failed", "detail": str(exc)},
                )

    # -- other endpoints -----------------------------------------------------------------------

    def models(self) -> dict[str, Any]:
        cfg = self.config
        created = 0
        ids = [cfg.router_name] + [f"{cfg.router_name}/{c}" for c in cfg.contexts]
        return {
            "object": "list",
            "data": [
                {"id": i, "object": "model", "created": created, "owned_by": "zeta-router"}
                for i in ids
            ],
        }

    async def feedback(self, request: web.Request) -> dict[str, Any]:
        _check_content_type(request)
        raw = await _read_body(request, 64 * 1024)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(
                400, f"the request body is not valid JSON: {exc}", code="invalid_json"
            ) from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object", code="invalid_type")
        unknown = sorted(set(body) - {"request_id", "score", "label"})
        if unknown:
            raise ApiError(
                400, f"unknown fields: {', '.join(unknown)}", code="unknown_field", param=unknown[0]
            )
        rid = body.get("request_id")
        if not isinstance(rid, str) or not rid:
            raise ApiError(
                400,
                "'request_id' is required and must be a string",
                code="invalid_value",
                param="request_id",
            )
        score = body.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0.0 <= score <= 1.0:
            raise ApiError(
                400,
                "'score' is required and must be a number in [0, 1]",
                code="invalid_value",
                param="score",
            )
        label = body.get("label")
        if label is not None and not isinstance(label, str):
            raise ApiError(400, "'label' must be a string", code="invalid_type", param="label")
        known = self.recent.get(rid, time.monotonic())
        if known is None:
            raise ApiError(
                404,
                f"no recent request with id {rid!r} (ids are kept for {RECENT_TTL_SECONDS:g}s)",
                code="request_not_found",
                param="request_id",
            )
        context, tier = known
        self.metrics.observe(self.metrics.feedback_score, float(score), context, tier)
        log.info(
            "feedback recorded",
            extra={
                "event": "feedback",
                "request_id": rid,
                "context": context,
                "tier": tier,
                "score": score,
                "label": label,
            },
        )
        return {
            "object": "feedback",
            "request_id": rid,
            "context": context,
            "tier": tier,
            "score": score,
        }

    async def ready(self) -> tuple[bool, dict[str, bool]]:
        if self.draining or self.upstreams is None:
            return False, {}
        tiers = self.config.tiers
        results = await asyncio.gather(*(self.upstreams.probe(t) for t in tiers))
        states = {t.name: ok for t, ok in zip(tiers, results, strict=True)}
        return any(results), states

    def _access(
        self,
        request: web.Request,
        d: Decision,
        body: dict[str, Any],
        served: Tier | None,
        code: int,
        t0: float,
    ) -> None:
        extra: dict[str, Any] = {
            "event": "request",
            "request_id": d.request_id,
            "path": request.path,
            "status": code,
            "context": d.context.name,
            "score": round(d.score, 4),
            "decided_tier": self.config.tiers[d.tier].name
            if d.tier < len(self.config.tiers)
            else None,
            "tier": served.name if served else None,
            "stream": d.stream,
            "duration_ms": round((time.perf_counter() - t0) * 1000, 2),
        }
        if self.options.log_prompts:
            extra["prompt"] = features.request_text(body)[0]
        access_log.info("request", extra=extra)


# -- helpers -------------------------------------------------------------------------------------


def _request_id(request: web.Request) -> str:
    rid = request.headers.get("X-Request-Id", "")
    if 0 < len(rid) <= 128 and rid.isprintable() and rid.isascii():
        return rid
    return uuid.uuid4().hex


def _check_content_type(request: web.Request) -> None:
    ctype = request.headers.get("Content-Type")
    if ctype is None:
        return
    media = ctype.split(";", 1)[0].strip().lower()
    if media != JSON_TYPE and not media.endswith("+json"):
        raise ApiError(
            415,
            f"unsupported Content-Type {media!r}; send the body as application/json",
            code="unsupported_media_type",
        )


async def _read_body(request: web.Request, limit: int) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"the request body is larger than the limit of {limit} bytes", code="request_too_large"
    )


def _upstream_payload(body: dict[str, Any], model: str | None) -> bytes:
    out = dict(body)
    if model is None:
        out.pop("model", None)
    else:
        out["model"] = model
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


def _rewrite_model(data: bytes, model: str, collect: list[str] | None) -> bytes:
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


class _StreamAbortedError(ConnectionResetError):
    """A stream broke after bytes were sent; the client connection was closed."""


class _SseRewriter:
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


async def _error_detail(resp: aiohttp.ClientResponse) -> str:
    try:
        async with asyncio.timeout(1.0):
            text = (await resp.content.read(2048)).decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError):
        text = ""
    finally:
        resp.close()
    text = " ".join(text.split())[:200]
    return f"HTTP {resp.status}" + (f": {text}" if text else "")


def _decision_headers(
    resp: web.StreamResponse, cfg: RuntimeConfig, d: Decision, tier: Tier | None
) -> None:
    h = resp.headers
    h["x-zeta-tier"] = tier.name if tier is not None else NO_TIER
    h["x-zeta-score"] = f"{d.score:.4f}"
    h["x-zeta-context"] = d.context.name
    h["x-request-id"] = d.request_id


def _error_response(err: ApiError) -> web.Response:
    resp = web.Response(status=err.status, body=err.body(), content_type=JSON_TYPE)
    resp.headers.update(err.headers)
    return resp


# -- application ---------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status, "http_error"
        )
        if exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 405:
            allowed = exc.headers.get("Allow", "")
            message = (
                f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
            )
        else:
            message = exc.reason
        err = ApiError(exc.status, message, code=code)
        if "Allow" in exc.headers:
            err.headers["Allow"] = exc.headers["Allow"]
        return _error_response(err)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error", extra={"event": "internal_error", "path": request.path})
        return web.Response(
            status=500,
            body=error_body("internal router error", type_="server_error", code="internal_error"),
            content_type=JSON_TYPE,
        )


def build_app(router: Router) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=1 << 40)
    app[ROUTER_KEY] = router

    async def chat(request: web.Request) -> web.StreamResponse:
        return await router.handle_completion(request, "chat", "/v1/chat/completions")

    async def completions(request: web.Request) -> web.StreamResponse:
        return await router.handle_completion(request, "completions", "/v1/completions")

    async def models(request: web.Request) -> web.StreamResponse:
        return web.json_response(router.models())

    async def feedback(request: web.Request) -> web.StreamResponse:
        return web.json_response(await router.feedback(request))

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.StreamResponse:
        ok, tiers = await router.ready()
        status = "ready" if ok else ("draining" if router.draining else "not ready")
        return web.json_response(
            {"status": status, "generation": router.config.generation, "tiers": tiers},
            status=200 if ok else 503,
        )

    async def metrics(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=router.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/feedback", feedback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)

    async def on_startup(_: web.Application) -> None:
        await router.start()

    async def on_cleanup(_: web.Application) -> None:
        await router.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def _log_tier_failure(request_id: str, tier: Tier, err: TierError) -> None:
    log.warning(
        "tier failed",
        extra={
            "event": "tier_failed",
            "request_id": request_id,
            "tier": tier.name,
            "reason": err.reason,
            "detail": err.detail,
        },
    )
