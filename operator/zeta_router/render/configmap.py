"""The routing configuration and its ConfigMap ``<router>-routing`` (pure).

- :func:`effective_thresholds`: which cut points the routers should run — the control loop's
  (``status.thresholds``) while it owns them and they still fit the spec, else the spec's.
- :func:`build_routing_config`: the :class:`~zeta_router.api.routing.RoutingConfig` of a
  ZetaRouter (tiers in order with their in-cluster Service URL and ``localUrl``
  ``http://127.0.0.1:<port>``, contexts with thresholds and scorer weights, router settings).
- :func:`routing_generation`: the ``generation`` it gets: the live one when the content is
  unchanged, else one more than any generation seen (it never goes back, even when the
  ConfigMap was deleted, so routers' ``zeta_router_config_generation`` only grows).
- :func:`build_configmap`: the ConfigMap holding it under ``routing.yaml``.
- :func:`routing_status_fields`: the status fields that describe it (``thresholds``,
  ``thresholdsSummary``, ``routingGeneration``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from itertools import pairwise
from typing import Any

from zeta_router.api.learning import DEFAULT_JUDGE_PROMPT
from zeta_router.api.models import TierSpec, ZetaRouterSpec, ZetaRouterStatus
from zeta_router.api.routing import (
    CONFIGMAP_KEY,
    EXTERNAL_ENGINE,
    LearnedCorrection,
    RoutingConfig,
    RoutingContext,
    RoutingExternal,
    RoutingLearning,
    RoutingTier,
    configmap_routing,
    routing_yaml,
)
from zeta_router.render import names


def _fits(cuts: Sequence[float], count: int, lo: float, hi: float) -> bool:
    return (
        len(cuts) == count
        and all(lo <= c <= hi for c in cuts)
        and all(b > a for a, b in pairwise(cuts))
    )


def effective_thresholds(
    spec: ZetaRouterSpec, status: ZetaRouterStatus | None = None
) -> dict[str, list[float]]:
    """Cut points per context (in the spec's context order) that the routers should run.

    The loop's value for a context (``status.thresholds``) is used while the loop owns
    thresholds (``spec.loop_owns_thresholds``), the value still fits the spec (one cut point
    per tier boundary, strictly increasing, within the context's feedback bounds), and the
    spec's thresholds of that context are still those the loop started from
    (``status.thresholdsFrom``): a user who edits them gets them. Otherwise, and for contexts
    the loop has not set, the spec's thresholds.
    """
    base = spec.spec_thresholds()
    chosen = (status.thresholds if status is not None else None) or {}
    if not spec.loop_owns_thresholds or not chosen:
        return base
    started_from = (status.thresholds_from if status is not None else None) or {}
    out: dict[str, list[float]] = {}
    for ctx, cuts in base.items():
        lo, hi = spec.feedback.bounds_for(ctx)
        loop = chosen.get(ctx)
        spec_edited = ctx in started_from and not _same(started_from[ctx], cuts)
        usable = loop is not None and not spec_edited and _fits(loop, len(cuts), lo, hi)
        out[ctx] = list(loop) if usable and loop is not None else cuts
    return out


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    # Thresholds travel through YAML and JSON; compare as the ConfigMap rounds them.
    return len(a) == len(b) and all(abs(x - y) < 1e-9 for x, y in zip(a, b, strict=True))


def asleep_tiers(
    spec: ZetaRouterSpec, replicas: Mapping[str, int], ready: Mapping[str, int | None]
) -> set[str]:
    """The tiers the routers must treat as asleep: while the control loop owns replicas (it
    puts tiers to sleep, and its wake daemon ends a wake), those that may sleep (``min: 0``)
    and have no replica asked for, or no ready one yet (woken, still starting: requests there
    would find no server). ``ready``: ready replicas per tier (None or absent: unknown, taken
    as none for a tier just woken from zero)."""
    out: set[str] = set()
    if not spec.loop_owns_replicas:
        return out
    for t in spec.served_tiers:
        if not t.replicas.may_sleep:
            continue
        if replicas.get(t.name, t.replicas.start) == 0 or not ready.get(t.name):
            out.add(t.name)
    return out


def paused_tiers(spec: ZetaRouterSpec, status: ZetaRouterStatus | None) -> set[str]:
    """The external tiers the routers must treat as paused: while the control loop owns
    replicas (autoscaling in apply mode), those with a spend cap that the loop marked paused in
    ``status.external`` (a cap removed from the spec unpauses at once)."""
    if status is None or not status.external or not spec.loop_owns_replicas:
        return set()
    capped = {
        t.name
        for t in spec.tiers
        if t.external is not None and t.external.max_cost_per_hour is not None
    }
    return {e.name for e in status.external if e.paused and e.name in capped}


def tier_url(router: str, namespace: str, tier: str, port: int) -> str:
    """In-cluster URL of a tier's Service."""
    return f"http://{names.tier_object_name(router, tier)}.{namespace}.svc:{port}"


def tier_replicas_url(router: str, namespace: str, tier: str, port: int) -> str:
    """In-cluster URL of a tier's headless Service: its name resolves to every ready pod."""
    return f"http://{names.tier_replicas_service_name(router, tier)}.{namespace}.svc:{port}"


def routing_learning(spec: ZetaRouterSpec) -> RoutingLearning | None:
    """The routers' part of ``spec.learning`` (None while learning is off)."""
    learning = spec.learning
    if not learning.enabled:
        return None
    shadow = learning.sources.shadow
    return RoutingLearning(
        contexts=[c.name for c in spec.contexts if learning.learns(c.name)],
        sample_rate=learning.sample_rate,
        max_samples=learning.max_samples,
        sample_ttl_seconds=learning.sample_ttl_seconds,
        feedback_labels=learning.sources.feedback,
        shadow_judge=None if shadow is None else shadow.judge,
        judge_prompt=None
        if shadow is None or shadow.judge != "largest-tier"
        else (shadow.judge_prompt or DEFAULT_JUDGE_PROMPT),
    )


def routing_tier(name: str, namespace: str, t: TierSpec) -> RoutingTier:
    """A tier as the routers see it: its Services, or an external provider's URL and limits
    (and the file holding its key, never the key)."""
    ext = t.external
    if ext is not None:
        return RoutingTier(
            name=t.name,
            url=ext.base_url,
            served_model_name=ext.model,
            engine=EXTERNAL_ENGINE,
            cost_weight=t.cost_weight,
            external=RoutingExternal(
                api_key_file=names.external_key_file(t.name),
                requests_per_minute=ext.limits.requests_per_minute,
                tokens_per_minute=ext.limits.tokens_per_minute,
                overflow_only=ext.overflow_only,
                prompt_cost_per_1k_tokens=ext.prompt_cost_per_1k_tokens,
                completion_cost_per_1k_tokens=ext.completion_cost_per_1k_tokens,
            ),
        )
    return RoutingTier(
        name=t.name,
        url=tier_url(name, namespace, t.name, t.port),
        local_url=f"http://127.0.0.1:{t.port}",
        replicas=[tier_replicas_url(name, namespace, t.name, t.port)],
        served_model_name=t.served_name,
        engine=t.engine,
        cost_weight=t.cost_weight,
    )


def build_routing_config(
    name: str,
    namespace: str,
    spec: ZetaRouterSpec,
    thresholds: Mapping[str, Sequence[float]] | None = None,
    generation: int = 0,
    learned: Mapping[str, LearnedCorrection] | None = None,
    asleep: Collection[str] = (),
    paused: Collection[str] = (),
) -> RoutingConfig:
    """The routing configuration of ZetaRouter ``namespace/name``.

    ``thresholds``: cut points per context (normally :func:`effective_thresholds`); contexts
    missing from it use the spec's. ``generation``: see :func:`routing_generation`.
    ``learned``: the learned correction per context (normally
    ``render.learned.effective_corrections``). ``asleep``: the tiers that sleep (normally
    :func:`asleep_tiers`). ``paused``: the external tiers paused for their spend cap
    (normally :func:`paused_tiers`).
    """
    chosen = dict(thresholds or {})
    corrections = dict(learned or {})
    r = spec.router
    return RoutingConfig(
        generation=generation,
        router=r.model_name or name,
        tiers=[
            _marked(routing_tier(name, namespace, t), t.name in asleep, t.name in paused)
            for t in spec.tiers
        ],
        contexts=[
            RoutingContext(
                name=c.name,
                thresholds=list(chosen.get(c.name, c.thresholds or [])),
                scorer=c.scorer,
                learned=corrections.get(c.name),
                mode="cascade" if c.mode == "cascade" else None,
                escalate_above=c.escalate_above if c.mode == "cascade" else None,
                when_asleep="wait" if c.when_asleep == "wait" else None,
                wait_seconds=c.wait_seconds if c.when_asleep == "wait" else None,
            )
            for c in spec.contexts
        ],
        default_context=spec.default_context,
        failover=r.failover,
        allow_force_tier=r.allow_force_tier,
        force_tier_token_sha256=list(r.force_tier_token_sha256),
        shadow_sample_rate=r.shadow_sample_rate,
        timeouts=r.timeouts,
        stickiness=r.stickiness,
        circuit_breaker=r.circuit_breaker,
        balancing=r.balancing,
        max_body_bytes=r.max_body_bytes,
        scorer=r.scorer,
        learning=routing_learning(spec),
    )


def _marked(tier: RoutingTier, asleep: bool, paused: bool) -> RoutingTier:
    """``tier`` with its asleep mark, and (an external tier) its paused mark."""
    update: dict[str, Any] = {"asleep": True if asleep else None}
    if tier.external is not None:
        update["external"] = tier.external.model_copy(update={"paused": True if paused else None})
    return tier.model_copy(update=update)


def routing_generation(
    config: RoutingConfig,
    live_configmap: Mapping[str, Any] | None,
    last_generation: int | None = None,
) -> int:
    """The generation ``config`` should carry.

    The live ConfigMap's generation when its content equals ``config`` apart from the
    generation; otherwise one more than the largest of the live generation and
    ``last_generation`` (``status.routingGeneration``), so it only grows: 1 for a new ZetaRouter.
    """
    live = configmap_routing(live_configmap)
    if live is not None and live.model_copy(update={"generation": 0}) == config.model_copy(
        update={"generation": 0}
    ):
        return live.generation
    seen = max(live.generation if live is not None else 0, last_generation or 0)
    return seen + 1


def build_configmap(name: str, config: RoutingConfig) -> dict[str, Any]:
    """The ConfigMap ``<name>-routing`` with ``routing.yaml``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.routing_configmap_name(name),
            "labels": names.labels(name, "router"),
        },
        "data": {CONFIGMAP_KEY: routing_yaml(config)},
    }


def thresholds_summary(thresholds: Mapping[str, Sequence[float]]) -> str:
    """One line for the printer column: ``ZetaHRM=0.4 ZetaTRM=0.6 default=0.5`` (cut points of
    one context joined by ``/``; ``-`` when there are none, with a single tier)."""
    parts = []
    for ctx, cuts in thresholds.items():
        shown = "/".join(f"{c:g}" for c in cuts) or "-"
        parts.append(f"{ctx}={shown}")
    return " ".join(parts)


def routing_status_fields(config: RoutingConfig) -> dict[str, Any]:
    """Status fields describing the routing configuration the operator wrote."""
    thresholds = {c.name: list(c.thresholds) for c in config.contexts}
    return {
        "thresholds": thresholds,
        "thresholdsSummary": thresholds_summary(thresholds),
        "routingGeneration": config.generation,
    }
