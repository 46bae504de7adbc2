"""The HTTP endpoints: the OpenAI-compatible API (chat and completions, models, feedback) on the
client port, health and metrics on the admin port, and the middleware that turns every error
into OpenAI-style JSON.

:func:`completion` ties one request's steps together (read and check, decide, forward and
relay) and counts it once, with the status the client got.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from zeta_router.router.app import Router
from zeta_router.router.cascade import cascade, cascades
from zeta_router.router.config import RuntimeConfig
from zeta_router.router.connections import Handler as ConnectionHandler
from zeta_router.router.decision import Decision
from zeta_router.router.errors import JSON_TYPE, ApiError, error_body, error_response
from zeta_router.router.metrics import NO_TIER
from zeta_router.router.sleep import asleep_tier, same_tiers, wait_awake
from zeta_router.router.validation import Kind, load_json, parse_body
from zeta_router.scoring.samples import PAGE as SAMPLES_PAGE

log = logging.getLogger("zeta_router.router")

ROUTER_KEY: web.AppKey[Router] = web.AppKey("router")

#: Request headers passed on to the model server (everything else stays at the router).
FORWARDED_HEADERS = ("Authorization", "OpenAI-Organization", "OpenAI-Project", "traceparent")
FEEDBACK_MAX_BYTES = 64 * 1024


async def completion(
    router: Router, request: web.Request, kind: Kind, path: str
) -> web.StreamResponse:
    """One chat or completion request, counted exactly once in ``zeta_router_requests_total``
    with the status the client got (499: it went away first)."""
    t0 = time.perf_counter()
    cfg = router.config
    metrics = router.metrics
    context_name = cfg.default_context
    code = 500  # anything unforeseen: the middleware answers 500
    d: Decision | None = None
    body: dict[str, Any] = {}
    overhead = 0.0
    try:
        check_content_type(request)
        raw = await read_body(request, cfg.source.max_body_bytes, router.options.body_timeout)
        body = parse_body(raw, kind)
        d = router.decide(request, body, cfg)
        context_name = d.context.name
        cfg = await hold_for_wake(router, cfg, d)
        metrics.observe(metrics.decision_score, d.score, context_name)
        headers = {}  # X-Request-Id: set per tier tried
        if d.client_request_id is not None:
            headers["X-Client-Request-Id"] = d.client_request_id
        for h in FORWARDED_HEADERS:
            v = request.headers.get(h)
            if v is not None:
                headers[h] = v
        headers["Content-Type"] = JSON_TYPE
        overhead = time.perf_counter() - t0
        forwarder = router.forwarder
        assert forwarder is not None, "router not started"
        if cascades(cfg, d):

            async def forward(dd: Decision) -> tuple[web.StreamResponse, float]:
                return await forwarder.forward(request, cfg, dd, body, path, headers)

            response, extra = await cascade(
                cfg, d, body, forward, metrics, router.learning.cascaded
            )
        else:
            response, extra = await forwarder.forward(request, cfg, d, body, path, headers)
        overhead += extra
        code = response.status
        return response
    except ApiError as exc:
        code = exc.status
        # Bad requests are counted too: a sudden rise is worth an alert.
        if d is None and exc.code == "unknown_context":
            context_name = "unknown"
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        code = 499  # the client went away before its answer was complete
        raise
    finally:
        served = d.served.name if d is not None and d.served is not None else NO_TIER
        metrics.count_request(context_name, served, code)
        if d is not None:
            metrics.observe(metrics.overhead, overhead)
            if router.options.access_log:
                router.access(request, d, body, code, t0)


async def hold_for_wake(router: Router, cfg: RuntimeConfig, d: Decision) -> RuntimeConfig:
    """Count a request whose tier sleeps (it wakes the tier) and, for a context that waits,
    hold it until a reloaded config says the tier is awake: that config is the one to forward
    with. Otherwise the same config, and forwarding falls back (see ``router.sleep``)."""
    tier = asleep_tier(cfg, d.tier)
    if tier is None:
        return cfg
    router.metrics.wake_requests.labels(tier.name).inc()
    if d.context.wait_seconds is None:
        return cfg
    woken = await wait_awake(lambda: router.config, tier.name, d.context.wait_seconds)
    if woken is None or not same_tiers(cfg, woken):
        d.asleep = tier.name  # still asleep: fall back
        return cfg
    return woken


def parse_feedback(raw: bytes) -> tuple[str, float, str | None]:
    """The request id, score and label of a feedback body, or :class:`ApiError` (400)."""
    body = load_json(raw)
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
    return rid, score, label


def check_content_type(request: web.Request) -> None:
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


async def read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The whole request body, at most ``limit`` bytes (413), within ``seconds``
    (408: a client that sends its body too slowly loses its connection)."""
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    content = request.content
    if content.is_eof():  # all of it came with the headers: nothing to wait for
        data = content.read_nowait()
        if len(data) > limit:
            raise _too_large(limit)
        return data
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408,
            f"the request body did not arrive within {seconds:g}s",
            code="request_timeout",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"the request body is larger than the limit of {limit} bytes", code="request_too_large"
    )


# -- application ---------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_middleware(router: Router) -> Any:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        protocol = request.protocol
        if isinstance(protocol, ConnectionHandler):
            protocol.request_started()
        try:
            return await handler(request)
        except ApiError as exc:
            if exc.code == "request_timeout":
                router.metrics.client_timeout("body")
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(_http_error(request, exc))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception(
                "unexpected error", extra={"event": "internal_error", "path": request.path}
            )
            return web.Response(
                status=500,
                body=error_body(
                    "internal router error", type_="server_error", code="internal_error"
                ),
                content_type=JSON_TYPE,
            )

    return errors


def _http_error(request: web.Request, exc: web.HTTPException) -> ApiError:
    code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
        exc.status, "http_error"
    )
    if exc.status == 404:
        message = f"no such endpoint: {request.method} {request.path}"
    elif exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        message = f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    else:
        message = exc.reason
    err = ApiError(exc.status, message, code=code)
    if "Allow" in exc.headers:
        err.headers["Allow"] = exc.headers["Allow"]
    return err


def build_app(router: Router) -> web.Application:
    """The client API: what the entry Service exposes."""
    app = web.Application(middlewares=[_error_middleware(router)], client_max_size=1 << 40)
    app[ROUTER_KEY] = router

    async def chat(request: web.Request) -> web.StreamResponse:
        return await completion(router, request, "chat", "/v1/chat/completions")

    async def completions(request: web.Request) -> web.StreamResponse:
        return await completion(router, request, "completions", "/v1/completions")

    async def models(request: web.Request) -> web.StreamResponse:
        return web.json_response(router.models())

    async def feedback(request: web.Request) -> web.StreamResponse:
        check_content_type(request)
        raw = await read_body(request, FEEDBACK_MAX_BYTES, router.options.body_timeout)
        rid, score, label = parse_feedback(raw)
        return web.json_response(router.feedback(rid, score, label, int(time.time() * 1000)))

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/feedback", feedback)

    async def on_startup(_: web.Application) -> None:
        await router.start()

    async def on_cleanup(_: web.Application) -> None:
        await router.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def build_admin_app(router: Router) -> web.Application:
    """Health and metrics, on their own port: for the kubelet and Prometheus, not for clients
    of the entry Service."""
    app = web.Application(middlewares=[_error_middleware(router)])
    app[ROUTER_KEY] = router

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.StreamResponse:
        ok, tiers, breakers = await router.ready()
        status = "draining" if router.draining else ("ready" if ok else "not ready")
        return web.json_response(
            {
                "status": status,
                "generation": router.config.generation,
                "tiers": tiers,
                "breakers": breakers,
            },
            status=200 if ok else 503,
        )

    async def metrics(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=router.metrics.render(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def learning_samples(request: web.Request) -> web.StreamResponse:
        # The operator's learner reads the hashed samples and labels this router holds.
        after = _query_int(request, "after", 0, 0, 2**63)
        limit = _query_int(request, "limit", SAMPLES_PAGE, 1, SAMPLES_PAGE)
        batch = router.learning.batch(after, limit)
        if batch is None:
            raise ApiError(
                404,
                "learning is off in the routing config (spec.learning.enabled)",
                code="learning_off",
            )
        return web.json_response(batch.to_wire())

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/learning/samples", learning_samples)
    return app


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise ApiError(
            400,
            f"'{name}' must be a whole number in [{lo}, {hi}], got {raw!r}",
            code="invalid_value",
            param=name,
        )
    return value
