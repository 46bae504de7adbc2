"""Conversation stickiness: a conversation never goes back to a smaller tier.

Nothing is remembered between requests, so every replica reaches the same answer for the next
turn of a conversation, whichever replica served the earlier ones:

- a chat request carries its conversation; each earlier turn that got an answer (the messages
  before each assistant message) is scored again in the request's context, and the request
  goes at least to the largest tier any of them would go to now;
- a client that sends ``X-Zeta-Session`` gets back a signed session token (``x-zeta-session``)
  naming the tier its session reached; sending that token with the next request keeps the
  session at least there until the token expires (``stickiness.ttlSeconds``, renewed by every
  answer). This covers requests that carry no conversation (completions, trimmed histories).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zeta_router.router.config import Context, RuntimeConfig
from zeta_router.router.ids import InvalidTokenError, SessionInfo, Signer, new_nonce
from zeta_router.scoring import features

#: Earlier turns scored again per request, most recent first: bounds the cost of a long chat.
MAX_EARLIER_TURNS = 16


def earlier_turns(messages: list[Any]) -> list[list[Any]]:
    """The message lists of the earlier requests of a conversation, most recent first: each
    prefix that an assistant message answered."""
    out = []
    for i in range(len(messages) - 1, 0, -1):
        m = messages[i]
        if isinstance(m, Mapping) and m.get("role") == "assistant":
            out.append(messages[:i])
            if len(out) == MAX_EARLIER_TURNS:
                break
    return out


def conversation_floor(body: Mapping[str, Any], context: Context, tier: int, top: int) -> int:
    """The tier for a request decided ``tier`` once its conversation's earlier turns count:
    the largest of ``tier`` and theirs (never above ``top``)."""
    messages = body.get("messages")
    if tier >= top or not isinstance(messages, list) or len(messages) < 2:
        return tier
    for prefix in earlier_turns(messages):
        earlier = dict(body)
        earlier["messages"] = prefix
        t = context.selector.select(context.scorer.score(features.extract(earlier)))
        if t > tier:
            tier = t
            if tier >= top:
                break
    return tier


def session_floor(token: str | None, signer: Signer, cfg: RuntimeConfig, now_ms: int) -> int:
    """The floor a session token names (0 for none, an invalid or expired token, or a tier
    that no longer exists)."""
    if not token:
        return 0
    try:
        info = signer.verify_session(token)
    except InvalidTokenError:
        return 0
    if info.expires_ms <= now_ms:
        return 0
    tier = cfg.tier_by_name.get(info.floor)
    return tier.index if tier is not None else 0


def session_token(signer: Signer, floor: str, now_ms: int, ttl_seconds: float) -> str:
    return signer.session_token(
        SessionInfo(
            nonce=new_nonce(),
            issued_ms=now_ms,
            floor=floor,
            expires_ms=now_ms + int(ttl_seconds * 1000),
        )
    )
