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

Failures are explicit: an unreachable Prometheus, a timeout, an error answer, or no scrape
target of this ZetaRouter at all give an unavailable snapshot saying which; a single missing
series leaves that one value ``None`` (unknown, never zero).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

LABEL_NAMESPACE = "namespace"
LABEL_POD = "pod"
LABEL_ROUTER = "app_kubernetes_io_instance"
LABEL_COMPONENT = "app_kubernetes_io_component"
LABEL_TIER = "zeta_ai_tier"

COMPONENT_MODEL_SERVER = "model-server"
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
    contexts: tuple[str, ...]


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
        largest = _quote(target.tiers[-1].name)
        q["feedback_sum"] = (
            "sum by (context) "
            f"(increase(zeta_router_feedback_score_sum{{{s},tier!={largest}}}[{w}]))"
        )
        q["feedback_count"] = (
            "sum by (context) "
            f"(increase(zeta_router_feedback_score_count{{{s},tier!={largest}}}[{w}]))"
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
    return MetricsSnapshot(
        status=MetricsStatus.OK,
        tiers=tiers,
        contexts=contexts,
        config_generation=None if generation is None else int(generation),
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


class PrometheusSource:
    """Queries one Prometheus (prometheus-api-client; blocking — run it in a worker thread)."""

    def __init__(
        self,
        url: str,
        *,
        window_seconds: float = 120.0,
        timeout_seconds: float = 5.0,
        headers: Mapping[str, str] | None = None,
        basic_auth: tuple[str, str] | None = None,
        verify_tls: bool = True,
    ) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url.rstrip("/")
        self.window_seconds = window_seconds
        self.timeout_seconds = timeout_seconds
        # No retries inside one snapshot: the loop tries again next interval anyway.
        self._client = PrometheusConnect(
            url=self.url,
            headers=dict(headers) if headers else None,
            disable_ssl=not verify_tls,
            retry=Retry(total=0, connect=0, read=0, redirect=0, status=0),
            auth=basic_auth,
            timeout=timeout_seconds,
        )

    def query(self, promql: str) -> Result:
        result: Result = self._client.custom_query(promql, timeout=self.timeout_seconds)
        return result

    def snapshot(self, target: RouterTarget) -> MetricsSnapshot:
        """A snapshot of ``target``; never raises for Prometheus trouble (it is in the status)."""
        import requests
        from prometheus_api_client.exceptions import PrometheusApiClientException

        results: dict[str, Result] = {}
        try:
            for key, promql in build_queries(target, self.window_seconds).items():
                results[key] = self.query(promql)
        except requests.exceptions.RequestException as exc:
            if not _is_timeout(exc):
                return MetricsSnapshot.unavailable(
                    MetricsStatus.UNREACHABLE,
                    f"cannot reach Prometheus at {self.url}: {_short(exc)}",
                )
            return MetricsSnapshot.unavailable(
                MetricsStatus.TIMEOUT,
                f"Prometheus at {self.url} did not answer within {self.timeout_seconds:g}s",
            )
        except (PrometheusApiClientException, ValueError, KeyError) as exc:
            return MetricsSnapshot.unavailable(
                MetricsStatus.ERROR, f"Prometheus at {self.url} answered an error: {_short(exc)}"
            )
        return assemble(target, results)


def _is_timeout(exc: BaseException) -> bool:
    """requests reports a read timeout as Timeout, or (with retries off) as a ConnectionError
    wrapping urllib3's MaxRetryError whose reason is a timeout."""
    import requests
    from urllib3.exceptions import MaxRetryError, NewConnectionError, TimeoutError

    def timed_out(e: object) -> bool:
        # urllib3 makes a refused connection a subclass of its connect timeout.
        return isinstance(e, TimeoutError) and not isinstance(e, NewConnectionError)

    if isinstance(exc, requests.exceptions.Timeout):
        return True
    return any(timed_out(a.reason if isinstance(a, MaxRetryError) else a) for a in exc.args)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
