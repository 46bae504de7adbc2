"""Read one ZetaRouter's load from Prometheus into a `MetricsSnapshot`.

Queries select targets by the labels the chart's scrape config (or a PodMonitor with
``podTargetLabels``) puts on every pod of a ZetaRouter — the label contract, see
docs/autoscaling.md:

    namespace                     the pod's namespace
    pod                           the pod's name
    app_kubernetes_io_instance    the ZetaRouter's name   (pod label app.kubernetes.io/instance)
    app_kubernetes_io_component   model-server | router   (pod label app.kubernetes.io/component)
    zeta_ai_tier                  the tier of the pod     (pod label zeta.ai/tier)

Engine-aware metric names: vLLM (``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
``vllm:kv_cache_usage_perc`` or the older ``vllm:gpu_cache_usage_perc``,
``vllm:time_to_first_token_seconds_bucket``) and llama.cpp (``llamacpp:requests_deferred``,
``llamacpp:requests_processing``; its TTFT comes from the routers'
``zeta_router_upstream_ttft_seconds``). Routing per context comes from the routers' metrics.

Failures are explicit: an unreachable Prometheus (refused, timed out, not HTTP: one kind), an
error answer (its status code only), an endpoint outside the operator's allow-list, or no scrape
target of this ZetaRouter at all give an unavailable snapshot saying which; a single missing
series leaves that one value ``None`` (unknown, never zero).
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from zeta_router.api.engines import (
    LLAMACPP_RUNNING,
    LLAMACPP_WAITING,
    VLLM_KV_CACHE,
    VLLM_KV_CACHE_OLD,
    VLLM_RUNNING,
    VLLM_TTFT_BUCKET,
    VLLM_WAITING,
)
from zeta_router.autoscale.snapshot import (
    ContextSample,
    MetricsSnapshot,
    MetricsStatus,
    ScoreHistogram,
    TierSample,
)
from zeta_router.bounded_http import EndpointAllowList, FetchError, fetch

log = logging.getLogger(__name__)

LABEL_NAMESPACE = "namespace"
LABEL_POD = "pod"
LABEL_ROUTER = "app_kubernetes_io_instance"
LABEL_COMPONENT = "app_kubernetes_io_component"
LABEL_TIER = "zeta_ai_tier"

COMPONENT_MODEL_SERVER = "model-server"
REFUSED_REASONS = "http_429|busy"
"""Tier failures that mean "no capacity" (``router.upstream``): demand the tier's queue lacks."""
COST_METRIC = "zeta_router_cost_total"
"""The routers' estimate of what an external tier's answers cost (``router.metrics``)."""
SECONDS_PER_HOUR = 3600
COMPONENT_ROUTER = "router"


@dataclass(frozen=True)
class TierTarget:
    name: str
    engine: str = "vllm"


@dataclass(frozen=True)
class RouterTarget:
    """Which ZetaRouter to read: its namespace and name, tiers (smallest first) and contexts."""

    namespace: str
    name: str
    tiers: tuple[TierTarget, ...]
    """The tiers the operator runs (external tiers have no model server to read)."""
    contexts: tuple[str, ...]
    external: tuple[str, ...] = ()
    """External tiers, whose spend rate is read from the routers' cost counter."""


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(target: RouterTarget, **extra: str) -> str:
    """The label matchers of a ZetaRouter's series, plus ``extra`` equality matchers."""
    matchers = {LABEL_NAMESPACE: target.namespace, LABEL_ROUTER: target.name, **extra}
    return ",".join(f"{k}={_quote(v)}" for k, v in matchers.items())


def build_queries(target: RouterTarget, window_seconds: float) -> dict[str, str]:
    """Every PromQL query of a snapshot, by key. Pure (unit-tested against the label contract).

    Per-tier queries are grouped by the tier label so their number does not grow with tiers;
    engine-specific ones are only asked when a tier runs that engine."""
    w = f"{max(round(window_seconds), 1)}s"
    s = selector(target)
    ms = selector(target, **{LABEL_COMPONENT: COMPONENT_MODEL_SERVER})
    by_tier = f"by ({LABEL_TIER})"
    engines = {t.engine for t in target.tiers}
    q: dict[str, str] = {
        "targets": f"count {by_tier} (up{{{ms}}})",
        "ready": f"sum {by_tier} (up{{{ms}}})",
        "router_ttft_p90": "histogram_quantile(0.9, sum by (tier, le) "
        f"(rate(zeta_router_upstream_ttft_seconds_bucket{{{s}}}[{w}])))",
        "request_rate": f"sum by (tier) (rate(zeta_router_requests_total{{{s}}}[{w}]))",
        "wanting": f"sum by (tier) (increase(zeta_router_wake_requests_total{{{s}}}[{w}]))",
        "refused": "sum by (tier) (rate(zeta_router_tier_failures_total"
        f'{{{s},reason=~"{REFUSED_REASONS}"}}[{w}]))',
        "context_requests": "sum by (context, tier) "
        f'(increase(zeta_router_requests_total{{{s},code=~"2.."}}[{w}]))',
        "context_scores": "sum by (context, le) "
        f"(increase(zeta_router_decision_score_bucket{{{s}}}[{w}]))",
        "shadow_sum": f"sum by (context) (increase(zeta_router_shadow_agreement_sum{{{s}}}[{w}]))",
        "shadow_count": "sum by (context) "
        f"(increase(zeta_router_shadow_agreement_count{{{s}}}[{w}]))",
        "generation_min": f"min(zeta_router_config_generation{{{s}}})",
        "routers": f"count(zeta_router_config_generation{{{s}}})",
    }
    if len(target.tiers) > 1:
        # Quality of the requests kept below the largest tier the cluster runs (an external
        # tier's answers are no part of it).
        if target.external:
            above = "|".join([target.tiers[-1].name, *target.external])
            not_kept = f"tier!~{_quote(above)}"
        else:
            not_kept = f"tier!={_quote(target.tiers[-1].name)}"
        q["feedback_sum"] = (
            f"sum by (context) (increase(zeta_router_feedback_score_sum{{{s},{not_kept}}}[{w}]))"
        )
        q["feedback_count"] = (
            f"sum by (context) (increase(zeta_router_feedback_score_count{{{s},{not_kept}}}[{w}]))"
        )
    if target.external:
        q["spend_per_hour"] = (
            f"sum by (tier) (rate({COST_METRIC}{{{s}}}[{w}])) * {SECONDS_PER_HOUR}"
        )
    if "vllm" in engines:
        q["vllm_waiting"] = f"sum {by_tier} ({VLLM_WAITING}{{{s}}})"
        q["vllm_running"] = f"sum {by_tier} ({VLLM_RUNNING}{{{s}}})"
        q["vllm_kv"] = (
            f"avg {by_tier} ({VLLM_KV_CACHE}{{{s}}}) or avg {by_tier} ({VLLM_KV_CACHE_OLD}{{{s}}})"
        )
        q["vllm_ttft_p90"] = (
            f"histogram_quantile(0.9, sum by ({LABEL_TIER}, le) "
            f"(rate({VLLM_TTFT_BUCKET}{{{s}}}[{w}])))"
        )
    if "llamacpp" in engines:
        q["llamacpp_waiting"] = f"sum {by_tier} ({LLAMACPP_WAITING}{{{s}}})"
        q["llamacpp_running"] = f"sum {by_tier} ({LLAMACPP_RUNNING}{{{s}}})"
    return q


Result = list[dict[str, Any]]


def _value(item: Mapping[str, Any]) -> float | None:
    try:
        v = float(item["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def _by(result: Result, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in result:
        key = item.get("metric", {}).get(label)
        value = _value(item)
        if key is not None and value is not None:
            out[str(key)] = value
    return out


def _scalar(result: Result) -> float | None:
    for item in result:
        return _value(item)
    return None


def assemble(target: RouterTarget, results: Mapping[str, Result]) -> MetricsSnapshot:
    """Turn query results (keys of `build_queries`) into a snapshot. Pure."""
    targets = _by(results.get("targets", []), LABEL_TIER)
    if not targets:
        return MetricsSnapshot.unavailable(
            MetricsStatus.NO_SERIES,
            f"no scrape targets labelled {LABEL_NAMESPACE}={target.namespace}, "
            f"{LABEL_ROUTER}={target.name}, {LABEL_COMPONENT}={COMPONENT_MODEL_SERVER} "
            "(is the scrape config or PodMonitor in place?)",
        )
    ready = _by(results.get("ready", []), LABEL_TIER)
    routers = _scalar(results.get("routers", []))
    routers_report = routers is not None and routers > 0
    request_rate = _by(results.get("request_rate", []), "tier")
    router_ttft = _by(results.get("router_ttft_p90", []), "tier")
    wanting = _by(results.get("wanting", []), "tier")
    refused = _by(results.get("refused", []), "tier")
    tiers: dict[str, TierSample] = {}
    for t in target.tiers:
        if t.engine == "vllm":
            waiting = _by(results.get("vllm_waiting", []), LABEL_TIER).get(t.name)
            running = _by(results.get("vllm_running", []), LABEL_TIER).get(t.name)
            kv = _by(results.get("vllm_kv", []), LABEL_TIER).get(t.name)
            ttft = _by(results.get("vllm_ttft_p90", []), LABEL_TIER).get(t.name)
            if ttft is None:
                ttft = router_ttft.get(t.name)
        else:
            waiting = _by(results.get("llamacpp_waiting", []), LABEL_TIER).get(t.name)
            running = _by(results.get("llamacpp_running", []), LABEL_TIER).get(t.name)
            kv = None
            ttft = router_ttft.get(t.name)
        n_ready: int | None = int(ready[t.name]) if t.name in ready else None
        if n_ready is None and t.name not in targets:
            # No target at all for this tier (scaled to zero, or pods not scraped yet).
            n_ready = 0
        rate = request_rate.get(t.name)
        if rate is None and routers_report:
            # Routers report, but none has sent this tier a request: it served nothing.
            rate = 0.0
        tiers[t.name] = TierSample(
            name=t.name,
            ready_replicas=n_ready,
            waiting=waiting,
            running=running,
            kv_cache_usage=kv,
            ttft_p90_seconds=ttft,
            request_rate=rate,
            wanting=wanting.get(t.name),
            refused_rate=refused.get(t.name, 0.0 if routers_report else None),
        )

    contexts: dict[str, ContextSample] = {}
    shadow_sum = _by(results.get("shadow_sum", []), "context")
    shadow_count = _by(results.get("shadow_count", []), "context")
    feedback_sum = _by(results.get("feedback_sum", []), "context")
    feedback_count = _by(results.get("feedback_count", []), "context")
    for ctx in target.contexts:
        by_tier = {t.name: 0.0 for t in target.tiers}
        for item in results.get("context_requests", []):
            labels = item.get("metric", {})
            value = _value(item)
            if labels.get("context") == ctx and labels.get("tier") in by_tier and value:
                by_tier[labels["tier"]] += value
        quality: float | None = None
        samples = 0.0
        if shadow_count.get(ctx, 0.0) > 0:
            samples = shadow_count[ctx]
            quality = shadow_sum.get(ctx, 0.0) / samples
        elif feedback_count.get(ctx, 0.0) > 0:
            samples = feedback_count[ctx]
            quality = feedback_sum.get(ctx, 0.0) / samples
        contexts[ctx] = ContextSample(
            name=ctx,
            requests_by_tier=by_tier,
            scores=_histogram(results.get("context_scores", []), ctx),
            quality=quality,
            quality_samples=samples,
        )
    generation = _scalar(results.get("generation_min", []))
    spend = _by(results.get("spend_per_hour", []), "tier")
    spend_per_hour: dict[str, float] = {}
    for ext in target.external:
        if ext in spend:
            spend_per_hour[ext] = spend[ext]
        elif routers_report:
            # Routers report, but none has counted a cost for this tier: it spent nothing.
            spend_per_hour[ext] = 0.0
    return MetricsSnapshot(
        status=MetricsStatus.OK,
        tiers=tiers,
        contexts=contexts,
        config_generation=None if generation is None else int(generation),
        spend_per_hour=spend_per_hour,
    )


def _histogram(result: Result, context: str) -> ScoreHistogram | None:
    buckets: list[tuple[float, float]] = []
    for item in result:
        labels = item.get("metric", {})
        value = _value(item)
        if labels.get("context") != context or value is None:
            continue
        try:
            bound = float(labels["le"])
        except (KeyError, ValueError):
            continue
        buckets.append((bound, value))
    if not buckets:
        return None
    buckets.sort()
    # increase() of each bucket is extrapolated separately; keep the counts cumulative.
    cumulative: list[float] = []
    top = 0.0
    for _, count in buckets:
        top = max(top, count)
        cumulative.append(top)
    return ScoreHistogram(tuple(b for b, _ in buckets), tuple(cumulative))


#: Largest answer read from Prometheus for one query (a snapshot's answers are a few KiB).
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: A snapshot's queries together end within this many times the per-query timeout.
SNAPSHOT_BUDGET_TIMEOUTS = 3.0


class PrometheusSource:
    """Queries one Prometheus (prometheus-api-client; blocking — run it in a worker thread).

    The client's requests go through :class:`BoundedAdapter`: the operator's bounded fetch (no
    redirects, a total deadline, a size bound, nothing of the answer echoed). A snapshot's
    queries share one budget (``SNAPSHOT_BUDGET_TIMEOUTS`` timeouts), so a slow Prometheus
    costs its ZetaRouter's loop a bounded time, and only its own."""

    def __init__(
        self,
        url: str,
        *,
        window_seconds: float = 120.0,
        timeout_seconds: float = 5.0,
        headers: Mapping[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        verify_tls: bool = True,
        allowed: EndpointAllowList | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url.rstrip("/")
        self.window_seconds = window_seconds
        self.timeout_seconds = timeout_seconds
        self.allowed = allowed or EndpointAllowList()
        self.clock = clock
        session = requests.Session()
        session.verify = verify_tls
        session.trust_env = False  # no proxies or netrc picked up from the environment
        adapter = BoundedAdapter(max_bytes)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # No retries inside one snapshot: the loop tries again next interval anyway.
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(headers) if headers else None,
            disable_ssl=not verify_tls,
            retry=Retry(total=0, connect=0, read=0, redirect=0, status=0),
            auth=basic_auth,
            timeout=timeout_seconds,
            session=session,
        )
        # The client mounts its own adapter on the URL's prefix: ours goes back over it.
        session.mount(self.url, adapter)

    def query(self, promql: str, timeout: float | None = None) -> Result:
        result = self._client.custom_query(
            promql, timeout=self.timeout_seconds if timeout is None else timeout
        )
        if not isinstance(result, list):
            raise ValueError("not a query result")
        return result

    def snapshot(self, target: RouterTarget) -> MetricsSnapshot:
        """A snapshot of ``target``; never raises for Prometheus trouble (it is in the status,
        in fixed words: nothing Prometheus answered is repeated)."""
        from prometheus_api_client.exceptions import PrometheusApiClientException

        if not self.allowed.allows(self.url):
            return MetricsSnapshot.unavailable(
                MetricsStatus.NOT_ALLOWED,
                f"Prometheus at {self.url} {FetchError('not-allowed')}; not queried",
            )
        results: dict[str, Result] = {}
        budget_end = self.clock() + SNAPSHOT_BUDGET_TIMEOUTS * self.timeout_seconds
        try:
            for key, promql in build_queries(target, self.window_seconds).items():
                left = budget_end - self.clock()
                if left <= 0:
                    raise FetchError("unreachable")
                results[key] = self.query(promql, min(self.timeout_seconds, left))
        except FetchError as exc:
            unreachable = exc.kind == "unreachable"
            status = MetricsStatus.UNREACHABLE if unreachable else MetricsStatus.ERROR
            return MetricsSnapshot.unavailable(status, f"Prometheus at {self.url} {exc}")
        except (PrometheusApiClientException, ValueError, KeyError, TypeError, OSError) as exc:
            # A 2xx whose body is not a query result (the client's own errors carry the body:
            # they are not repeated).
            log.info("Prometheus at %s: unusable answer (%s)", self.url, type(exc).__name__)
            return MetricsSnapshot.unavailable(
                MetricsStatus.ERROR,
                f"Prometheus at {self.url} answered with no usable query result",
            )
        return assemble(target, results)


class BoundedAdapter(HTTPAdapter):
    """A requests transport adapter that sends with :func:`bounded_http.fetch` (the timeout
    requests passes is the request's total deadline); a non-2xx answer raises
    :class:`FetchError` before any client code sees its body."""

    def __init__(self, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        super().__init__(max_retries=0)
        self.max_bytes = max_bytes

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        if isinstance(timeout, tuple):
            timeout = sum(t for t in timeout if t is not None)
        body = request.body
        if body is not None and not isinstance(body, str | bytes):
            raise FetchError("unreachable")  # a streamed body: nothing here sends one
        answer = fetch(
            str(request.url),
            deadline_seconds=float(timeout or 30.0),
            max_bytes=self.max_bytes,
            method=str(request.method or "GET"),
            headers={k: str(v) for k, v in request.headers.items()},
            body=body.encode() if isinstance(body, str) else body,
            tls_verify=verify is not False,
            ca_file=verify if isinstance(verify, str) else None,
        )
        resp = Response()
        resp.status_code = answer.status
        resp.headers = CaseInsensitiveDict(answer.headers)
        resp.raw = io.BytesIO(answer.body)
        resp.url = str(request.url)
        resp.request = request
        resp.encoding = get_encoding_from_headers(resp.headers)
        resp.reason = ""
        return resp


def target_from(
    namespace: str, name: str, tiers: Sequence[tuple[str, str]], contexts: Sequence[str]
) -> RouterTarget:
    """Convenience: ``tiers`` as (name, engine) pairs, smallest first."""
    return RouterTarget(
        namespace=namespace,
        name=name,
        tiers=tuple(TierTarget(n, e) for n, e in tiers),
        contexts=tuple(contexts),
    )
