"""The routing decision: from a request's headers and body and the configuration in use to a
context, a score and a tier (and whether to shadow-sample it).

Nothing here does I/O or awaits: a decision is computed in one go, and every way it can fail is
an :class:`ApiError` for the client (unknown context, unknown or forbidden tier). Nothing is
read from earlier requests except what this request carries (its conversation, a session
token), so every replica decides the same.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zeta_router.router.config import Context, RuntimeConfig, Tier
from zeta_router.router.errors import ApiError
from zeta_router.router.ids import RequestInfo, Signer, new_nonce
from zeta_router.router.shadow import shadows_largest
from zeta_router.router.stickiness import conversation_floor, session_floor, session_token

#: Longest client request id kept (echoed and passed upstream); longer ones are dropped.
MAX_CLIENT_ID = 128


@dataclass(slots=True)
class Decision:
    context: Context
    score: float
    tier: int  # index into config.tiers
    decided: str  # that tier's name
    forced: bool
    requested_model: str
    stream: bool
    nonce: bytes
    issued_ms: int
    generation: int
    signer: Signer
    sticky: bool = False  # raised to the conversation's or session's floor
    floor: int = 0  # the smallest tier the conversation or session may go to
    shadow: bool = False
    client_request_id: str | None = None
    session_token: str | None = None  # to return as x-zeta-session
    shadow_text: list[str] = field(default_factory=list)
    served: Tier | None = None
    #: (prompt, completion) tokens of the answer, from its ``usage`` when it reports one.
    usage: tuple[int, int] | None = None
    asleep: str | None = None  # the sleeping tier it wanted, when answered on another
    _rid: str = ""

    def sign(self, served: Tier | None) -> str:
        """The request id when ``served`` answers (None: when no tier does)."""
        return self.signer.request_id(
            RequestInfo(
                nonce=self.nonce,
                issued_ms=self.issued_ms,
                generation=self.generation,
                score=self.score,
                context=self.context.name,
                decided=self.decided,
                served=served.name if served is not None else None,
                forced=self.forced,
                sticky=self.sticky,
            )
        )

    @property
    def request_id(self) -> str:
        """The signed request id: the answering tier's once one answered, else the one that
        names no tier (made only when asked for: most requests never need it)."""
        if not self._rid:
            self._rid = self.sign(None)
        return self._rid

    @request_id.setter
    def request_id(self, value: str) -> None:
        self._rid = value


def decide(
    headers: Mapping[str, str],
    body: dict[str, Any],
    cfg: RuntimeConfig,
    signer: Signer,
    rand: random.Random,
    now_ms: int,
) -> Decision:
    requested = body.get("model") or cfg.router_name
    context = context_for(headers, requested, cfg)
    score = context.scorer.score_body(body)
    tier = context.selector.select(score)
    forced_name = headers.get("X-Zeta-Tier")
    forced = forced_name is not None
    sticky = False
    floor_tier = 0
    token = None
    if forced_name is not None:
        _check_force_allowed(headers, cfg)
        forced_tier = cfg.tier_by_name.get(forced_name.strip())
        if forced_tier is None:
            raise ApiError(
                400,
                f"unknown tier {forced_name!r} in X-Zeta-Tier; tiers: "
                + ", ".join(t.name for t in cfg.tiers),
                code="unknown_tier",
                param="X-Zeta-Tier",
            )
        tier = forced_tier.index
    elif cfg.source.stickiness.max_sessions > 0:
        top = len(cfg.tiers) - 1
        session = headers.get("X-Zeta-Session")
        floor = max(
            conversation_floor(body, context, tier, top),
            session_floor(session, signer, cfg, now_ms),
        )
        if floor > tier:
            tier, sticky = floor, True
        floor_tier = floor
        if session is not None:
            token = session_token(
                signer, cfg.tiers[tier].name, now_ms, cfg.source.stickiness.ttl_seconds
            )
    shadow = (
        not forced
        and cfg.source.shadow_sample_rate > 0.0
        and (tier < len(cfg.tiers) - 1 or shadows_largest(cfg, context.name))
        and rand.random() < cfg.source.shadow_sample_rate
    )
    return Decision(
        context=context,
        score=score,
        tier=tier,
        decided=cfg.tiers[tier].name,
        forced=forced,
        requested_model=requested,
        stream=body.get("stream") is True,
        nonce=new_nonce(),
        issued_ms=now_ms,
        generation=cfg.generation,
        signer=signer,
        sticky=sticky,
        floor=floor_tier,
        shadow=shadow,
        client_request_id=client_request_id(headers),
        session_token=token,
    )


def _check_force_allowed(headers: Mapping[str, str], cfg: RuntimeConfig) -> None:
    """Pinning a tier bypasses routing and its cost control: only when the config allows it,
    and, when it lists token hashes, only for a caller presenting one of the tokens."""
    if not cfg.source.allow_force_tier:
        raise ApiError(
            403,
            "forcing a tier with X-Zeta-Tier is disabled by the routing config "
            "(allowForceTier: false)",
            code="force_tier_disabled",
            param="X-Zeta-Tier",
        )
    hashes = cfg.source.force_tier_token_sha256
    if not hashes:
        return
    token = headers.get("X-Zeta-Tier-Token")
    if token is not None:
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        # Compared with every hash, in constant time each, so timing tells nothing.
        if sum(hmac.compare_digest(digest, h) for h in hashes):
            return
    raise ApiError(
        403,
        "forcing a tier needs a valid X-Zeta-Tier-Token"
        + (" (the one given is not accepted)" if token is not None else ""),
        code="force_tier_forbidden",
        param="X-Zeta-Tier-Token",
    )


def context_for(headers: Mapping[str, str], model: str, cfg: RuntimeConfig) -> Context:
    """The request's context: header ``X-Zeta-Context``, else ``<router>/<context>`` as the
    model name, else the default context."""
    name = headers.get("X-Zeta-Context")
    param = "X-Zeta-Context"
    if name is None:
        prefix = cfg.router_name + "/"
        if model.startswith(prefix):
            name, param = model[len(prefix) :], "model"
        else:
            return cfg.contexts[cfg.default_context]
    ctx = cfg.contexts.get(name.strip())
    if ctx is None:
        raise ApiError(
            400,
            f"unknown context {name!r}; valid contexts: " + ", ".join(cfg.contexts),
            code="unknown_context",
            param=param,
        )
    return ctx


def client_request_id(headers: Mapping[str, str]) -> str | None:
    """The client's own request id (``X-Client-Request-Id``, else ``X-Request-Id``), when it is
    printable ASCII of at most 128 characters."""
    rid = headers.get("X-Client-Request-Id") or headers.get("X-Request-Id")
    if rid and len(rid) <= MAX_CLIENT_ID and rid.isprintable() and rid.isascii():
        return rid
    return None
