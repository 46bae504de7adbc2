"""What the policy carries from one interval to the next (per tier: replicas asked for, the
low-load clock, the learned pressure point; per context: base cut points and load shift; the
routing generation being waited for), and its JSON form for ``status.loopState``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from zeta_router.autoscale.policy.config import MIN_THRESHOLD_GAP, ContextPolicy, PolicyConfig


@dataclass(frozen=True)
class TierState:
    desired: int
    """Replicas currently asked for (the Deployment's spec.replicas)."""
    low_since: float | None = None
    pressure_load: float | None = None
    """In-flight requests per replica at which pressure was last seen."""
    pressure_seen_at: float | None = None
    queued_at: float | None = None
    """Last time the tier had a notable queue (its TTFT p90 lags that by a metrics window)."""
    idle_since: float | None = None
    """Since when a tier that may sleep has seen no request at all (None: it has, or unknown)."""


@dataclass(frozen=True)
class ContextState:
    base: tuple[float, ...]
    """Cut points chosen by feedback (the spec's thresholds when feedback is off)."""
    shift: tuple[float, ...]
    """Load-shift offset added to each cut point (>= 0)."""


@dataclass(frozen=True)
class PolicyState:
    tiers: Mapping[str, TierState]
    contexts: Mapping[str, ContextState]
    awaiting_generation: int | None = None
    """Routing-config generation that carries the last threshold change, until routers run it."""
    paused: Mapping[str, float] = field(default_factory=dict)
    """External tiers paused for their spend cap, and since when."""

    @classmethod
    def initial(
        cls,
        config: PolicyConfig,
        replicas: Mapping[str, int] | None = None,
        thresholds: Mapping[str, Sequence[float]] | None = None,
    ) -> PolicyState:
        """A fresh state: replicas as given (else each tier's min), thresholds as given (else
        the spec's), nothing remembered."""
        replicas = replicas or {}
        thresholds = thresholds or {}
        return cls(
            tiers={
                t.name: TierState(desired=replicas.get(t.name, t.min_replicas))
                for t in config.tiers
            },
            contexts={
                c.name: ContextState(
                    base=tuple(thresholds.get(c.name, c.thresholds)),
                    shift=tuple(0.0 for _ in c.thresholds),
                )
                for c in config.contexts
            },
        )

    def with_current(
        self,
        config: PolicyConfig,
        replicas: Mapping[str, int],
        thresholds: Mapping[str, Sequence[float]] | None = None,
    ) -> PolicyState:
        """This state re-synced to what actually runs: tiers or contexts added to the spec get
        fresh entries, removed ones are dropped, and given values replace the remembered ones.
        A context whose running thresholds differ from base + shift is re-based on them."""
        tiers: dict[str, TierState] = {}
        for t in config.tiers:
            prev = self.tiers.get(t.name) or TierState(desired=t.min_replicas)
            tiers[t.name] = replace(prev, desired=replicas.get(t.name, prev.desired))
        contexts: dict[str, ContextState] = {}
        for c in config.contexts:
            prev_ctx = self.contexts.get(c.name)
            running = None if thresholds is None else thresholds.get(c.name)
            if prev_ctx is None or len(prev_ctx.base) != len(c.thresholds):
                base = tuple(running) if running is not None else c.thresholds
                contexts[c.name] = ContextState(base=base, shift=tuple(0.0 for _ in base))
            elif running is not None and not close(
                tuple(running), effective_thresholds(c, prev_ctx)
            ):
                contexts[c.name] = ContextState(
                    base=tuple(running), shift=tuple(0.0 for _ in running)
                )
            else:
                contexts[c.name] = prev_ctx
        return PolicyState(
            tiers=tiers,
            contexts=contexts,
            awaiting_generation=self.awaiting_generation,
            paused=self.paused,
        )

    def awaiting(self, generation: int | None) -> PolicyState:
        return replace(self, awaiting_generation=generation)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the operator keeps it in an annotation between intervals)."""
        return {
            "tiers": {
                name: {
                    "desired": s.desired,
                    "lowSince": s.low_since,
                    "pressureLoad": s.pressure_load,
                    "pressureSeenAt": s.pressure_seen_at,
                    "queuedAt": s.queued_at,
                    "idleSince": s.idle_since,
                }
                for name, s in self.tiers.items()
            },
            "contexts": {
                name: {"base": list(s.base), "shift": list(s.shift)}
                for name, s in self.contexts.items()
            },
            "awaitingGeneration": self.awaiting_generation,
            "paused": dict(self.paused),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyState:
        """Inverse of `to_dict`; raises ValueError on anything malformed."""
        try:
            tiers = {
                str(name): TierState(
                    desired=int(v["desired"]),
                    low_since=_opt_float(v.get("lowSince")),
                    pressure_load=_opt_float(v.get("pressureLoad")),
                    pressure_seen_at=_opt_float(v.get("pressureSeenAt")),
                    queued_at=_opt_float(v.get("queuedAt")),
                    idle_since=_opt_float(v.get("idleSince")),
                )
                for name, v in dict(data.get("tiers", {})).items()
            }
            contexts = {
                str(name): ContextState(
                    base=tuple(float(x) for x in v["base"]),
                    shift=tuple(float(x) for x in v["shift"]),
                )
                for name, v in dict(data.get("contexts", {})).items()
            }
            gen = data.get("awaitingGeneration")
            paused = {str(k): float(v) for k, v in dict(data.get("paused") or {}).items()}
            return cls(
                tiers=tiers,
                contexts=contexts,
                awaiting_generation=None if gen is None else int(gen),
                paused=paused,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed autoscaler state: {exc!r}") from exc


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def effective_thresholds(ctx: ContextPolicy, s: ContextState) -> tuple[float, ...]:
    """base + shift, within the context's bounds, strictly increasing."""
    return normalise(ctx, [b + d for b, d in zip(s.base, s.shift, strict=True)])


def normalise(ctx: ContextPolicy, values: Sequence[float]) -> tuple[float, ...]:
    out = [min(max(round(v, 6), ctx.lower), ctx.upper) for v in values]
    if not out:
        return ()
    # Strictly increasing: push up from the bottom, then back down from the top under the upper
    # bound (bounds narrower than the gaps need are refused by the API's validation).
    for i in range(1, len(out)):
        out[i] = max(out[i], round(out[i - 1] + MIN_THRESHOLD_GAP, 6))
    out[-1] = min(out[-1], ctx.upper)
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], round(out[i + 1] - MIN_THRESHOLD_GAP, 6))
    return tuple(min(max(v, ctx.lower, 0.0), ctx.upper, 1.0) for v in out)


def close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))
