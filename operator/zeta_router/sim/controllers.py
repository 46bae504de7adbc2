"""The controllers the simulator compares: ZetaRouter's policy and two baselines.

- `PolicyController`: `zeta_router.autoscale.policy.decide`, exactly as the operator runs it.
- `StaticController`: every tier at its max, thresholds fixed (provisioned for the peak).
- `QueueHPAController`: what a plain HPA/KEDA setup does per tier on a queue metric with a
  fixed target: ``desired = ceil(total waiting / target per replica)``, 10 % tolerance, a 5-minute
  scale-down stabilisation window (the highest recommendation in the window wins), scale-up
  limited to the larger of +100 % and +4 pods per period; thresholds fixed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import replace

from zeta_router.autoscale.policy import PolicyConfig, PolicyState, decide
from zeta_router.autoscale.snapshot import MetricsSnapshot
from zeta_router.sim.engine import Control, Controller
from zeta_router.sim.scenario import Scenario


def _spec_thresholds(scenario: Scenario) -> dict[str, tuple[float, ...]]:
    return {c.name: tuple(c.thresholds) for c in scenario.contexts}


class PolicyController:
    name = "zeta-router"

    def __init__(self) -> None:
        self.config: PolicyConfig | None = None
        self.state: PolicyState | None = None

    def start(self, scenario: Scenario) -> Control:
        self.config = scenario.policy_config()
        replicas = {t.name: t.initial_replicas for t in scenario.tiers}
        self.state = PolicyState.initial(self.config, replicas)
        return Control(replicas=replicas, thresholds=_spec_thresholds(scenario))

    def step(self, snapshot: MetricsSnapshot, now: float) -> Control:
        if self.config is None or self.state is None:
            raise RuntimeError("start() must run before step()")
        decision = decide(self.config, snapshot, self.state, now)
        state = decision.state
        if decision.thresholds_changed:
            # The simulated routers load a new config generation by the next interval.
            state = state.awaiting((snapshot.config_generation or 0) + 1)
        self.state = state
        return Control(
            replicas=dict(decision.replicas),
            thresholds=dict(decision.thresholds),
            decisions=len(decision.changes),
            paused=decision.paused,
        )

    def wake(self, tier: str, now: float) -> Control | None:
        """The operator's wake path (``autoscale.wake``): a sleeping tier scaled from zero at
        once on requests that wanted it; the loop's next interval carries on from there."""
        if self.config is None or self.state is None:
            return None
        ts = self.state.tiers.get(tier)
        if ts is None or ts.desired > 0:
            return None
        wanted = max(1, self.config.tier(tier).min_replicas)
        tiers = dict(self.state.tiers)
        tiers[tier] = replace(ts, desired=wanted, idle_since=None, low_since=None)
        self.state = replace(self.state, tiers=tiers)
        return Control(
            replicas={name: t.desired for name, t in tiers.items()},
            thresholds={},
            decisions=1,
        )


class StaticController:
    name = "static"

    def __init__(self) -> None:
        self.control = Control(replicas={}, thresholds={})

    def start(self, scenario: Scenario) -> Control:
        self.control = Control(
            replicas={t.name: t.max_replicas for t in scenario.tiers},
            thresholds=_spec_thresholds(scenario),
        )
        return self.control

    def step(self, snapshot: MetricsSnapshot, now: float) -> Control:
        return Control(replicas=self.control.replicas, thresholds=self.control.thresholds)


class QueueHPAController:
    name = "hpa-queue"
    tolerance = 0.1
    stabilization_seconds = 300.0

    def __init__(self) -> None:
        self.scenario: Scenario | None = None
        self.current: dict[str, int] = {}
        self.history: dict[str, deque[tuple[float, int]]] = {}

    def start(self, scenario: Scenario) -> Control:
        self.scenario = scenario
        self.current = {t.name: t.initial_replicas for t in scenario.tiers}
        self.history = {t.name: deque() for t in scenario.tiers}
        return Control(replicas=dict(self.current), thresholds=_spec_thresholds(scenario))

    def step(self, snapshot: MetricsSnapshot, now: float) -> Control:
        assert self.scenario is not None, "start() first"
        target = self.scenario.target_queue_per_replica
        changes = 0
        for tier in self.scenario.tiers:
            current = self.current[tier.name]
            sample = snapshot.tiers.get(tier.name)
            if sample is None or sample.waiting is None:
                recommended = current  # HPA keeps the scale when the metric is missing
            else:
                per_pod = sample.waiting / max(current, 1)
                if current and abs(per_pod / target - 1.0) <= self.tolerance:
                    recommended = current
                else:
                    recommended = math.ceil(sample.waiting / target)
            history = self.history[tier.name]
            history.append((now, recommended))
            while history and history[0][0] < now - self.stabilization_seconds:
                history.popleft()
            stabilised = max(r for _, r in history)
            if recommended > current:
                desired = min(recommended, max(current * 2, current + 4))
            else:
                desired = min(current, stabilised)
            desired = min(max(desired, tier.min_replicas), tier.max_replicas)
            if desired != current:
                changes += 1
            self.current[tier.name] = desired
        return Control(
            replicas=dict(self.current),
            thresholds=_spec_thresholds(self.scenario),
            decisions=changes,
        )


CONTROLLERS: dict[str, type[Controller]] = {
    "zeta-router": PolicyController,
    "static": StaticController,
    "hpa-queue": QueueHPAController,
}
