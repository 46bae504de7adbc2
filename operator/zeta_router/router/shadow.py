"""Shadow sampling: how often would the next larger tier have answered the same?

A sampled request answered by a smaller tier is sent again, in the background, to the next
larger tier; the two answers are compared (normalised exact match when both are short, token F1
otherwise) and the agreement goes to a metric and to a bounded JSONL log. While the learner
takes labels from shadow pairs, a sampled answer of the largest tier is sent to the tier below
as well, and each pair goes on to the learner (``router.learning``). The client never waits for
any of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import string
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zeta_router.router.errors import JSON_TYPE
from zeta_router.router.upstream import TierError, Upstreams, upstream_payload
from zeta_router.scoring import features

if TYPE_CHECKING:
    from zeta_router.router.config import RuntimeConfig, Tier
    from zeta_router.router.decision import Decision
    from zeta_router.router.metrics import RouterMetrics

log = logging.getLogger("zeta_router.router")

SHORT_ANSWER_TOKENS = 4
SHADOW_CONCURRENCY = 4

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> list[str]:
    text = _PUNCT.sub(" ", text.lower())
    return _ARTICLES.sub(" ", text).split()


def agreement(a: str, b: str) -> tuple[float, str]:
    """Agreement in [0, 1] between two answers, and the method used (``exact`` or ``f1``)."""
    ta, tb = normalise(a), normalise(b)
    if len(ta) <= SHORT_ANSWER_TOKENS and len(tb) <= SHORT_ANSWER_TOKENS:
        return (1.0 if ta == tb else 0.0), "exact"
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0, "f1"
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall), "f1"


def answer_text(body: Any) -> str | None:
    """The generated text of a non-streamed chat or completion response body."""
    if not isinstance(body, dict):
        return None
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    first = choices[0]
    message = first.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str):
        return str(message["content"])
    text = first.get("text")
    return text if isinstance(text, str) else None


def delta_text(event: Any) -> str:
    """The text carried by one streamed chunk (chat delta or completion text)."""
    if not isinstance(event, dict):
        return ""
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    first = choices[0]
    delta = first.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("content"), str):
        return str(delta["content"])
    text = first.get("text")
    return text if isinstance(text, str) else ""


#: Largest shadow answer read (a completion of any sensible max_tokens is far smaller).
SHADOW_ANSWER_MAX_BYTES = 4 * 1024 * 1024


class JsonlLog:
    """Append-only JSONL file bounded to ``max_bytes``: when full it is moved to ``<name>.1``
    (replacing the previous one) and a new file is started."""

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        with self._lock:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes:
                self.path.replace(self.path.with_name(self.path.name + ".1"))
            with self.path.open("ab") as f:
                f.write(line)


def shadow_record(
    *,
    request_id: str,
    context: str,
    score: float,
    tier: str,
    shadow_tier: str,
    value: float,
    method: str,
    prompt: str | None = None,
    answers: tuple[str, str] | None = None,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "time": round(time.time(), 3),
        "request_id": request_id,
        "context": context,
        "score": round(score, 6),
        "tier": tier,
        "shadow_tier": shadow_tier,
        "agreement": round(value, 6),
        "method": method,
    }
    if prompt is not None:
        rec["prompt"] = prompt
    if answers is not None:
        rec["answer"], rec["shadow_answer"] = answers
    return rec


#: ``(upstreams, cfg, decision, body, smaller tier's answer, larger tier's answer)``: what is
#: done with a pair besides the agreement metric (the learner's labels).
OnPair = Callable[
    ["Upstreams", "RuntimeConfig", "Decision", dict[str, Any], str, str], Awaitable[None]
]


class ShadowSampler:
    """Sends sampled requests again to the neighbouring tier, in the background, and records
    how far the two answers agree. The neighbour is the next larger tier; for an answer of the
    largest tier (sampled only while the learner takes labels from pairs) the tier below. At
    most ``SHADOW_CONCURRENCY`` pairs are in flight, judge included; more are dropped."""

    def __init__(
        self,
        metrics: RouterMetrics,
        log_path: Path | None,
        log_max_bytes: int,
        log_prompts: bool,
        on_pair: OnPair | None = None,
    ) -> None:
        self.metrics = metrics
        self.log_prompts = log_prompts
        self.on_pair = on_pair
        self._log = JsonlLog(log_path, log_max_bytes) if log_path else None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(SHADOW_CONCURRENCY)

    def start(
        self,
        upstreams: Upstreams,
        cfg: RuntimeConfig,
        d: Decision,
        body: dict[str, Any],
        tier: Tier,
    ) -> None:
        if tier.index + 1 < len(cfg.tiers):
            other = cfg.tiers[tier.index + 1]
        elif tier.index > 0 and shadows_largest(cfg, d.context.name):
            other = cfg.tiers[tier.index - 1]
        else:
            return  # answered by the largest tier (a failover): no pair to make
        if other.external is not None or tier.external is not None:
            return  # a provider's answers cost money and its limits: never a shadow pair
        if other.asleep:
            return  # no replica to ask: the pair is not worth waking it for
        if self._slots.locked():
            log.debug(
                "shadow request dropped: too many in flight", extra={"event": "shadow_dropped"}
            )
            return
        task = asyncio.get_running_loop().create_task(
            self._run(upstreams, cfg, d, body, tier, other)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def in_flight(self) -> int:
        """Shadow pairs being made now."""
        return len(self._tasks)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self,
        upstreams: Upstreams,
        cfg: RuntimeConfig,
        d: Decision,
        body: dict[str, Any],
        tier: Tier,
        other_tier: Tier,
    ) -> None:
        shadow_body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        payload = upstream_payload(shadow_body, other_tier.model)
        path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
        async with self._slots:
            try:
                resp = await upstreams.open(
                    other_tier,
                    path,
                    payload,
                    {"Content-Type": JSON_TYPE, "X-Request-Id": d.request_id},
                )
                async with resp:
                    if resp.status != 200:
                        return
                    deadline = asyncio.get_running_loop().time() + cfg.source.timeouts.total_seconds
                    # Bounded: an answer past the bound is cut, fails to parse, and is no pair.
                    raw = await resp.read(deadline, SHADOW_ANSWER_MAX_BYTES + 1)
                    if len(raw) > SHADOW_ANSWER_MAX_BYTES:
                        raise ValueError("shadow answer too large")
                    other = answer_text(json.loads(raw))
            except (TierError, OSError, ValueError, TimeoutError) as exc:
                log.info(
                    "shadow request failed", extra={"event": "shadow_failed", "detail": str(exc)}
                )
                return
            if other is None:
                return
            mine = "".join(d.shadow_text)
            value, method = agreement(mine, other)
            self.metrics.observe(self.metrics.shadow_agreement, value, d.context.name)
            self._record(d, body, tier, other_tier, value, method, mine, other)
            if self.on_pair is not None:
                smaller, larger = (mine, other) if tier.index < other_tier.index else (other, mine)
                try:
                    await self.on_pair(upstreams, cfg, d, body, smaller, larger)
                except Exception:  # a learner's bug must not take the router down
                    log.exception("shadow pair handler failed", extra={"event": "pair_failed"})

    def _record(
        self,
        d: Decision,
        body: dict[str, Any],
        tier: Tier,
        other_tier: Tier,
        value: float,
        method: str,
        mine: str,
        other: str,
    ) -> None:
        if self._log is None:
            return
        prompt = features.request_text(body)[0] if self.log_prompts else None
        rec = shadow_record(
            request_id=d.request_id,
            context=d.context.name,
            score=d.score,
            tier=tier.name,
            shadow_tier=other_tier.name,
            value=value,
            method=method,
            prompt=prompt,
            answers=(mine, other) if self.log_prompts else None,
        )
        try:
            self._log.append(rec)
        except OSError as exc:
            log.warning(
                "cannot write the shadow log",
                extra={"event": "shadow_log_failed", "detail": str(exc)},
            )


def shadows_largest(cfg: RuntimeConfig, context: str) -> bool:
    """Whether answers of the largest tier are shadowed too: only for the learner's labels
    (pairs judged for a context that learns), so that labels cover every tier's requests."""
    learning = cfg.source.learning
    return (
        learning is not None
        and learning.shadow_judge is not None
        and (context in learning.contexts)
    )
