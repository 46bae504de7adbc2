"""The router's Prometheus metrics (names are a contract with the control loop and dashboards).

Each :class:`RouterMetrics` owns its registry, so several routers can live in one process (tests)
without sharing counters. Labelled children are cached because ``labels()`` is the expensive part
of an observation on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

_UNIT_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))
_OVERHEAD_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)

NO_TIER = "none"


class RouterMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "zeta_router_requests_total",
            "Requests answered, by context, the tier that served them ('none' when no tier did) "
            "and HTTP status code.",
            ("context", "tier", "code"),
            registry=r,
        )
        self.decision_score = Histogram(
            "zeta_router_decision_score",
            "Routing score of each routed request, by context.",
            ("context",),
            buckets=_UNIT_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "zeta_router_overhead_seconds",
            "Time spent in the router itself per request: reading, checking and scoring the "
            "request, and rewriting a non-streamed answer; upstream time excluded.",
            buckets=_OVERHEAD_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "zeta_router_upstream_ttft_seconds",
            "Time from sending a request upstream to its first response byte, by tier.",
            ("tier",),
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "zeta_router_upstream_duration_seconds",
            "Time from sending a request upstream to the end of its response, by tier.",
            ("tier",),
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "zeta_router_inflight",
            "Requests currently being served by each tier.",
            ("tier",),
            registry=r,
        )
        self.failovers = Counter(
            "zeta_router_failovers_total",
            "Requests moved from one tier to another, with the reason the first one failed "
            "(see zeta_router_tier_failures_total).",
            ("from", "to", "reason"),
            registry=r,
        )
        self.tier_failures = Counter(
            "zeta_router_tier_failures_total",
            "Requests a tier failed, by tier and reason, whether or not another tier took "
            "them over (see docs/router.md for the reasons).",
            ("tier", "reason"),
            registry=r,
        )
        self.replica_requests = Counter(
            "zeta_router_replica_requests_total",
            "Requests sent to each replica of a tier (every try), by why it was picked "
            "(see docs/router.md).",
            ("tier", "replica", "reason"),
            registry=r,
        )
        self.replica_failures = Counter(
            "zeta_router_replica_failures_total",
            "Tries a replica failed, by reason (the tier failures' reasons); the request "
            "went on to another replica or tier.",
            ("tier", "replica", "reason"),
            registry=r,
        )
        self.replica_ejections = Counter(
            "zeta_router_replica_ejections_total",
            "Times a replica was left out for balancing.ejectionSeconds after failing.",
            ("tier", "replica"),
            registry=r,
        )
        self.wake_requests = Counter(
            "zeta_router_wake_requests_total",
            "Requests whose tier was asleep at zero replicas (or waking), by that tier: the "
            "signal that wakes it (the operator reads it from the admin port).",
            ("tier",),
            registry=r,
        )
        self.asleep_fallbacks = Counter(
            "zeta_router_asleep_fallbacks_total",
            "Requests answered on another tier because theirs was asleep (whenAsleep fallback, "
            "or wait past waitSeconds), by the sleeping tier.",
            ("tier",),
            registry=r,
        )
        self.replicas = Gauge(
            "zeta_router_replicas",
            "Replicas this router knows for each tier.",
            ("tier",),
            registry=r,
        )
        self.shadow_agreement = Histogram(
            "zeta_router_shadow_agreement",
            "Agreement in [0, 1] between a smaller tier's answer and the next larger tier's "
            "answer to the same sampled request, by context.",
            ("context",),
            buckets=_UNIT_BUCKETS,
            registry=r,
        )
        self.feedback_score = Histogram(
            "zeta_router_feedback_score",
            "Feedback scores in [0, 1] posted to /v1/feedback, by context and serving tier.",
            ("context", "tier"),
            buckets=_UNIT_BUCKETS,
            registry=r,
        )
        self.config_generation = Gauge(
            "zeta_router_config_generation",
            "Generation of the routing configuration in use.",
            registry=r,
        )
        self.threshold = Gauge(
            "zeta_router_threshold",
            "Cut points of the routing configuration in use: a request of this context whose "
            "score is at or above the value goes to this tier (or a larger one).",
            ("context", "tier"),
            registry=r,
        )
        self.config_errors = Counter(
            "zeta_router_config_errors_total",
            "Configuration files that were rejected (the last good one stayed in use).",
            registry=r,
        )
        self.request_keys = Gauge(
            "zeta_router_request_keys",
            "The keys request ids and session tokens are verified with, by key id (a short "
            "public name of the key) and role: sign (the first, which signs) or verify.",
            ("key_id", "role"),
            registry=r,
        )
        self.connections_open = Gauge(
            "zeta_router_connections_open",
            "Client connections open on the API port.",
            registry=r,
        )
        self.connections_refused = Counter(
            "zeta_router_connections_refused_total",
            "Client connections refused with a 503 because --max-connections were open.",
            registry=r,
        )
        self.client_timeouts = Counter(
            "zeta_router_client_timeouts_total",
            "Client connections closed for slowness, by phase: headers (not complete within "
            "--header-timeout, answered 408), body (--body-timeout, 408), idle (no request "
            "within --idle-timeout).",
            ("phase",),
            registry=r,
        )
        self.cascade = Counter(
            "zeta_router_cascade_total",
            "Non-streamed requests of cascade contexts, by context and outcome: kept (the "
            "smallest tier's answer), escalated (the largest tier's), escalation_failed (the "
            "largest tier failed, the smallest tier's answer was kept), unjudged (no answer "
            "text to judge, kept).",
            ("context", "outcome"),
            registry=r,
        )
        self.cascade_doubt = Histogram(
            "zeta_router_cascade_doubt",
            "The answer-side judge's probability that the smallest tier's answer is wrong, by "
            "context.",
            ("context",),
            buckets=_UNIT_BUCKETS,
            registry=r,
        )
        self.learning_samples = Counter(
            "zeta_router_learning_samples_total",
            "Hashed samples of answered requests kept for the operator's learner, by context.",
            ("context",),
            registry=r,
        )
        self.learning_labels = Counter(
            "zeta_router_learning_labels_total",
            "Outcome labels kept for the operator's learner, by context and source "
            "(feedback, agreement, judge).",
            ("context", "source"),
            registry=r,
        )
        self.judge_verdicts = Counter(
            "zeta_router_judge_verdicts_total",
            "Answers of the largest tier asked to judge a shadow pair: yes, no, unclear "
            "(neither), failed (no answer).",
            ("verdict",),
            registry=r,
        )
        self.tokens = Counter(
            "zeta_router_tokens_total",
            "Tokens of the answers tiers gave, by tier and kind (prompt, completion), from "
            "each answer's usage (a stream reports it when the client asks for it, "
            "stream_options.include_usage).",
            ("tier", "kind"),
            registry=r,
        )
        self.cost = Counter(
            "zeta_router_cost_total",
            "Estimated cost of the answers of external tiers, from their usage and the tier's "
            "prices per 1000 tokens (the prices' currency unit).",
            ("tier",),
            registry=r,
        )
        self._children: dict[tuple[object, ...], MetricWrapperBase] = {}

    def child(self, metric: MetricWrapperBase, *labels: str) -> MetricWrapperBase:
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def count_request(self, context: str, tier: str, code: int) -> None:
        self.child(self.requests, context, tier, str(code)).inc()  # type: ignore[attr-defined]

    def observe(self, metric: Histogram, value: float, *labels: str) -> None:
        target = self.child(metric, *labels) if labels else metric
        target.observe(value)  # type: ignore[attr-defined]

    def inflight_add(self, tier: str, delta: int) -> None:
        self.child(self.inflight, tier).inc(delta)  # type: ignore[attr-defined]

    def learning_record(self, metric: Counter, *labels: str) -> None:
        self.child(metric, *labels).inc()  # type: ignore[attr-defined]

    def cascaded(self, context: str, outcome: str) -> None:
        self.child(self.cascade, context, outcome).inc()  # type: ignore[attr-defined]

    def set_request_keys(self, key_ids: Sequence[str]) -> None:
        self.request_keys.clear()
        for i, k in enumerate(key_ids):
            self.request_keys.labels(k, "sign" if i == 0 else "verify").set(1)

    def judge(self, verdict: str) -> None:
        self.child(self.judge_verdicts, verdict).inc()  # type: ignore[attr-defined]

    def failover(self, src: str, dst: str, reason: str) -> None:
        self.child(self.failovers, src, dst, reason).inc()  # type: ignore[attr-defined]

    def tier_failure(self, tier: str, reason: str) -> None:
        self.child(self.tier_failures, tier, reason).inc()  # type: ignore[attr-defined]

    def replica_request(self, tier: str, replica: str, reason: str) -> None:
        self.child(self.replica_requests, tier, replica, reason).inc()  # type: ignore[attr-defined]

    def replica_failure(self, tier: str, replica: str, reason: str) -> None:
        self.child(self.replica_failures, tier, replica, reason).inc()  # type: ignore[attr-defined]

    def replica_ejection(self, tier: str, replica: str) -> None:
        self.child(self.replica_ejections, tier, replica).inc()  # type: ignore[attr-defined]

    def count_tokens(self, tier: str, prompt: int, completion: int, cost: float) -> None:
        self.child(self.tokens, tier, "prompt").inc(prompt)  # type: ignore[attr-defined]
        self.child(self.tokens, tier, "completion").inc(completion)  # type: ignore[attr-defined]
        if cost > 0:
            self.child(self.cost, tier).inc(cost)  # type: ignore[attr-defined]

    def start_costs(self, tiers: Sequence[str]) -> None:
        """Export ``zeta_router_cost_total`` at 0 for each external tier before its first
        answer: a rate() over a series that appears with its first cost already counted misses
        that cost (the control loop's spend estimate reads that rate)."""
        for tier in tiers:
            self.child(self.cost, tier)

    def client_timeout(self, phase: str) -> None:
        self.child(self.client_timeouts, phase).inc()  # type: ignore[attr-defined]

    def set_thresholds(
        self, thresholds: Mapping[str, Sequence[float]], tiers: Sequence[str]
    ) -> None:
        """Export the cut points in use: ``thresholds[context][i]`` leads to ``tiers[i + 1]``.
        Series of contexts or tiers that are no longer configured are removed."""
        self.threshold.clear()
        for context, cuts in thresholds.items():
            for tier, cut in zip(tiers[1:], cuts, strict=False):
                self.threshold.labels(context, tier).set(cut)

    def render(self) -> bytes:
        return generate_latest(self.registry)
