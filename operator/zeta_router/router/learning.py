"""The router's part of learning: hashed samples of the requests it answers, and labels from the
feedback it receives and the shadow pairs it judges (see ``zeta_router.learning``).

Active while the routing configuration has a ``learning`` section (the ZetaRouter's
``spec.learning.enabled``). Then, for a request of a learning context answered with 200:

- with probability ``sampleRate`` its **sample** is kept: cheap features and hashed uni/bigram
  indices, under the request's key (the nonce of its signed id, the same on every replica),
  computed after the answer is on its way, so the client never waits for it;
- a client's score posted to ``/v1/feedback`` (on this or any replica) becomes a **label**;
- a **shadow pair** (the answer and the neighbouring tier's, see ``router.shadow``) becomes a
  label: by the answers' agreement, or by asking the largest tier whether the smaller tier's
  answer is as good as its own.

Samples and labels wait in a bounded :class:`~zeta_router.scoring.samples.SampleStore` until
the operator collects them from the admin port (``GET /learning/samples``). Nothing here keeps
a prompt or an answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from zeta_router.router.errors import JSON_TYPE
from zeta_router.router.shadow import agreement, answer_text
from zeta_router.router.upstream import TierError, Upstreams
from zeta_router.scoring import features, ngrams
from zeta_router.scoring.labels import (
    agreement_label,
    cascade_label,
    feedback_label,
    judge_label,
    judge_messages,
    parse_verdict,
)
from zeta_router.scoring.samples import PAGE, Batch, Label, Sample, SampleStore

if TYPE_CHECKING:
    from zeta_router.api.routing import RoutingLearning
    from zeta_router.router.app import Feedback
    from zeta_router.router.config import RuntimeConfig, Tier
    from zeta_router.router.decision import Decision
    from zeta_router.router.metrics import RouterMetrics

log = logging.getLogger("zeta_router.router")

#: Largest judge answer read: it answers a word or two (a bigger one is no verdict).
JUDGE_ANSWER_MAX_BYTES = 256 * 1024
#: The judge answers one word; a few tokens leave room for punctuation.
JUDGE_MAX_TOKENS = 8


class RouterLearning:
    def __init__(self, metrics: RouterMetrics, seed: int | None = None) -> None:
        self.metrics = metrics
        self.settings: RoutingLearning | None = None
        self.store: SampleStore | None = None
        self.ngram_key: bytes | None = None
        self.ngram_key_id: str | None = None
        self._random = random.Random(seed)

    # -- configuration ---------------------------------------------------------------------

    def configure(self, cfg: RuntimeConfig) -> None:
        """Follow the routing configuration: start, resize or stop keeping samples."""
        settings = cfg.source.learning
        self.settings = settings
        self.ngram_key = cfg.ngram_key
        self.ngram_key_id = None if cfg.ngram_key is None else ngrams.key_id(cfg.ngram_key)
        if settings is None:
            self.store = None
        elif self.store is None:
            self.store = SampleStore(settings.max_samples, settings.sample_ttl_seconds)
        else:
            self.store.resize(settings.max_samples, settings.sample_ttl_seconds)

    def learns(self, context: str) -> bool:
        s = self.settings
        return s is not None and self.store is not None and context in s.contexts

    @property
    def pairs_from_top(self) -> bool:
        """Whether answers of the largest tier are shadowed to the tier below (for labels)."""
        s = self.settings
        return s is not None and s.shadow_judge is not None

    # -- samples -------------------------------------------------------------------------------

    def answered(self, d: Decision, body: dict[str, Any], tier: Tier) -> None:
        """A tier answered ``d`` with 200: maybe keep its sample (computed once the answer is
        on its way)."""
        s = self.settings
        if s is None or not self.learns(d.context.name):
            return
        if s.sample_rate < 1.0 and self._random.random() >= s.sample_rate:
            return
        asyncio.get_running_loop().call_soon(
            self._sample, d.nonce.hex(), d.context.name, tier.name, body, s.hash_bits
        )

    def _sample(self, key: str, context: str, tier: str, body: dict[str, Any], bits: int) -> None:
        store = self.store
        if store is None:
            return
        x, text = features.vector_and_text(body)
        idx = ngrams.indices(text, bits, self.ngram_key)
        store.add(Sample(key, context, tier, time.time(), tuple(x), idx, bits, self.ngram_key_id))
        self.metrics.learning_record(self.metrics.learning_samples, context)

    # -- labels --------------------------------------------------------------------------------

    def _label(self, key: str, context: str, value: float, source: str) -> None:
        store = self.store
        if store is None:
            return
        store.add(Label(key, context, value, source, time.time()))
        self.metrics.learning_record(self.metrics.learning_labels, context, source)

    def feedback(self, cfg: RuntimeConfig, event: Feedback) -> None:
        """A client's score of an answer (on this replica or another) becomes a label."""
        info = event.request
        s = self.settings
        if s is None or not s.feedback_labels or not self.learns(info.context):
            return
        served = cfg.tier_by_name.get(info.served or "")
        if served is None:
            return  # a tier since removed: its position in the ladder is unknown
        value = feedback_label(event.score, served.index, len(cfg.tiers) - 1)
        if value is not None:
            self._label(info.request_key, info.context, value, "feedback")

    def cascaded(self, d: Decision, doubt: float) -> None:
        """A cascade's judged request: the judge's doubt of the smallest tier's answer becomes
        a label (``scoring.labels.cascade_label``)."""
        if self.learns(d.context.name):
            self._label(d.nonce.hex(), d.context.name, cascade_label(doubt), "cascade")

    async def pair(
        self,
        upstreams: Upstreams,
        cfg: RuntimeConfig,
        d: Decision,
        body: dict[str, Any],
        smaller: str,
        larger: str,
    ) -> None:
        """A shadow pair: ``smaller`` and ``larger`` are the two tiers' answers."""
        s = self.settings
        if s is None or s.shadow_judge is None or not self.learns(d.context.name):
            return
        key = d.nonce.hex()
        if s.shadow_judge == "agreement":
            value, _ = agreement(smaller, larger)
            self._label(key, d.context.name, agreement_label(value), "agreement")
            return
        verdict = await self._judge(upstreams, cfg, body, larger, smaller, s.judge_prompt)
        self.metrics.judge(
            "failed" if verdict is None else ("unclear" if verdict == "" else verdict)
        )
        if verdict in ("yes", "no"):
            self._label(key, d.context.name, judge_label(verdict == "yes"), "judge")

    async def _judge(
        self,
        upstreams: Upstreams,
        cfg: RuntimeConfig,
        body: dict[str, Any],
        reference: str,
        candidate: str,
        template: str | None,
    ) -> str | None:
        """Ask the largest (non-external) tier; "yes", "no", "" (neither) or None (no answer)."""
        from zeta_router.api.learning import DEFAULT_JUDGE_PROMPT

        # The largest tier the cluster runs: an external one would spend its quota outside
        # its limits.
        judge = next((t for t in reversed(cfg.tiers) if t.external is None), cfg.tiers[-1])
        request = features.request_text(body)[0]
        messages = judge_messages(template or DEFAULT_JUDGE_PROMPT, request, reference, candidate)
        payload: dict[str, Any] = {
            "messages": messages,
            "max_tokens": JUDGE_MAX_TOKENS,
            "temperature": 0,
        }
        if judge.model is not None:
            payload["model"] = judge.model
        data = json.dumps(payload, ensure_ascii=False).encode()
        try:
            resp = await upstreams.open(
                judge, "/v1/chat/completions", data, {"Content-Type": JSON_TYPE}
            )
            async with resp:
                if resp.status != 200:
                    log.info(
                        "judge request failed",
                        extra={"event": "judge_failed", "detail": f"HTTP {resp.status}"},
                    )
                    return None
                deadline = asyncio.get_running_loop().time() + cfg.source.timeouts.total_seconds
                raw = await resp.read(deadline, JUDGE_ANSWER_MAX_BYTES + 1)
                if len(raw) > JUDGE_ANSWER_MAX_BYTES:
                    raise ValueError("judge answer too large")
                text = answer_text(json.loads(raw))
        except (TierError, OSError, ValueError, TimeoutError) as exc:
            log.info("judge request failed", extra={"event": "judge_failed", "detail": str(exc)})
            return None
        verdict = parse_verdict(text or "")
        return "" if verdict is None else ("yes" if verdict else "no")

    # -- collection ----------------------------------------------------------------------------

    def batch(self, after: int, limit: int = PAGE) -> Batch | None:
        """Records after ``after`` for the operator (None: not learning)."""
        store = self.store
        return None if store is None else store.since(after, limit)
