"""One learning interval of one ZetaRouter, given what the loop gathered (pure but for the
learner's own computation): for each context that learns, refit when new labels came in,
decide, and say what to store, what to report and which Events to post.

Verdicts per context:

- ``waiting``: fewer labels than ``minLabels`` (or none since the last refit);
- ``adopted``: the candidate beat the model in use on the held-out recent labels, and the mode
  is apply: it goes into the store, and routers get it with the next routing ConfigMap;
- ``recommended``: it would have been adopted, but the mode is advisory (or the spec rolled
  back to the prior): reported only;
- ``refused``: it did not beat the model in use (APGR before and after are in the status).

An adopted correction has its bias moved so that as many recent requests pass the context's
first cut point as with the model in use (``scoring.learner.keep_share``; ``spec.learning.
keepShare``, on by default): learning changes which requests go to the larger tier, the
thresholds keep deciding how many.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zeta_router.api.learning import LearningSpec
from zeta_router.api.models import ZetaRouterSpec
from zeta_router.scoring.features import FEATURE_NAMES
from zeta_router.scoring.learned import (
    CompiledCorrection,
    LearnedCorrection,
    bytes_per_context,
)
from zeta_router.scoring.learner import (
    Labelled,
    LearnerConfig,
    Refit,
    keep_share,
    refit,
)
from zeta_router.scoring.scorer import Scorer, default_weights


@dataclass
class ContextMemory:
    """What the loop remembers of one context between intervals."""

    refitted_at_version: int = -1
    verdict: str = "waiting"
    status: dict[str, Any] = field(default_factory=dict)  # of the last refit
    adopted_at: str | None = None  # when the model in use was adopted (this process saw it)


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class CycleResult:
    models: dict[str, LearnedCorrection]  # the store as it should be
    contexts: list[dict[str, Any]]  # status.learning.contexts
    events: list[Event] = field(default_factory=list)

    def store_changed(self, before: Mapping[str, LearnedCorrection]) -> bool:
        return dict(before) != self.models


def learner_config(learning: LearningSpec, contexts: int) -> LearnerConfig:
    return LearnerConfig.for_labels(
        learning.min_labels,
        held_out_share=learning.held_out_share,
        min_gain=learning.min_gain,
        max_bytes=bytes_per_context(contexts),
    )


def model_id(model: LearnedCorrection) -> str:
    """A short id of a correction's content (not of its source text)."""
    body = model.model_copy(update={"source": None, "labels": 0}).model_dump_json()
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def run(
    spec: ZetaRouterSpec,
    thresholds: Mapping[str, Sequence[float]],
    labelled: Mapping[str, Labelled],
    versions: Mapping[str, int],
    recent: Mapping[str, Labelled],
    store: Mapping[str, LearnedCorrection],
    memory: dict[str, ContextMemory],
    now: str,
) -> CycleResult:
    """One interval (see the module docstring). ``labelled``/``versions``: each learning
    context's labels and how often they changed so far; ``recent``: its recent samples,
    labelled or not (labels come mostly from some tiers' answers, so the share of traffic past
    a cut point is measured on all of it); ``store``: the adopted corrections;
    ``memory`` is updated in place; ``now``: RFC 3339 time for the status."""
    learning = spec.learning
    names = [c.name for c in spec.contexts if learning.learns(c.name)]
    cfg = learner_config(learning, len(names))
    rolled_back = learning.model == "prior"
    apply = learning.mode == "apply" and not rolled_back
    models = {k: v for k, v in store.items() if k in {c.name for c in spec.contexts}}
    result = CycleResult(models=models, contexts=[])
    for ctx in spec.contexts:
        if ctx.name not in names:
            continue
        mem = memory.setdefault(ctx.name, ContextMemory())
        data = labelled.get(ctx.name) or _empty()
        version = versions.get(ctx.name, 0)
        prior = Scorer(ctx.scorer or spec.router.scorer or default_weights())
        stored = models.get(ctx.name)
        in_use = (
            CompiledCorrection.from_model(stored)
            if stored is not None and not rolled_back
            else CompiledCorrection.zero(cfg.bits)
        )
        status: dict[str, Any] = {
            "name": ctx.name,
            "source": "rolled-back"
            if rolled_back
            else ("learned" if stored is not None else "prior"),
            "labels": len(data),
        }
        if stored is not None:
            status["modelId"] = model_id(stored)
            status["modelLabels"] = stored.labels
        if len(data) < cfg.min_labels:
            mem.verdict = "waiting"
            mem.status = {
                "verdict": "waiting",
                "message": f"{len(data)} labels, refitted from {cfg.min_labels}",
            }
        elif version != mem.refitted_at_version:
            mem.refitted_at_version = version
            step = refit(data, prior, in_use, cfg)
            previous = mem.verdict
            verdict, model = _verdict(step, apply)
            mem.verdict = verdict
            mem.status = _refit_status(step, verdict, now)
            if model is not None and step.candidate is not None:
                cuts = thresholds.get(ctx.name) or []
                candidate = step.candidate
                if cuts and learning.keep_share:
                    traffic = recent.get(ctx.name)
                    sample = traffic if traffic is not None and len(traffic) else data
                    candidate = keep_share(prior, in_use, candidate, sample, cuts[0])
                stored = candidate.to_model(
                    source=f"learned by the operator from {step.trained_on} labels at {now}; "
                    f"held-out APGR {step.apgr_after:.3f} vs {step.apgr_before:.3f}",
                    labels=step.trained_on,
                )
                models[ctx.name] = stored
                status.update(source="learned", modelId=model_id(stored), modelLabels=stored.labels)
                mem.adopted_at = now
            event = _event(ctx.name, verdict, previous, step, rolled_back)
            if event is not None:
                result.events.append(event)
        status.update(mem.status)
        if status["source"] == "learned" and mem.adopted_at is not None:
            status["adoptedAt"] = mem.adopted_at
        result.contexts.append(status)
    return result


def _empty() -> Labelled:
    return Labelled(np.zeros((0, len(FEATURE_NAMES))), [], np.zeros(0))


def _verdict(step: Refit, apply: bool) -> tuple[str, Refit | None]:
    if step.candidate is None:
        return "waiting", None
    if not step.adopt:
        return "refused", None
    return ("adopted", step) if apply else ("recommended", None)


def _refit_status(step: Refit, verdict: str, now: str) -> dict[str, Any]:
    out: dict[str, Any] = {"verdict": verdict, "message": step.reason[:512], "lastRefit": now}
    if step.apgr_before is not None:
        out["apgrBefore"] = round(step.apgr_before, 4)
    if step.apgr_after is not None:
        out["apgrAfter"] = round(step.apgr_after, 4)
    if step.held_out:
        out["heldOut"] = step.held_out
    return out


def _event(
    context: str, verdict: str, previous: str, step: Refit, rolled_back: bool
) -> Event | None:
    """Every adoption is an Event; recommendations and refusals only when the verdict changes
    (a context refused at every interval would otherwise flood the Events)."""
    if verdict == "adopted":
        return Event("Normal", "LearnedModelAdopted", f"context {context}: {step.reason}")
    if verdict == previous:
        return None
    if verdict == "recommended":
        why = "spec.learning.model is prior" if rolled_back else "advisory mode"
        return Event(
            "Normal",
            "LearnedModelRecommended",
            f"context {context}: {step.reason} ({why}: not adopted)",
        )
    if verdict == "refused":
        return Event("Normal", "LearnedModelRefused", f"context {context}: {step.reason}")
    return None
