"""Which replica of a tier takes a request: pure functions of the replicas, their loads and the
request's prompt prefix (no I/O, no clock; :mod:`.replicas` feeds them).

**prefix** (the default) is consistent hashing with bounded loads (Mirrokni, Thorup and
Zadimoghaddam, 2018): every replica owns :data:`RING_POINTS` points on a ring of 64-bit hashes
of its address; a request's key (the first characters of its prompt up to its first user
message: what every turn of a conversation repeats) hashes to a point, and the request goes to
the first replica clockwise from it whose load stays within the bound
``ceil(load_factor * (total + 1) / n)``. Requests that begin alike (the turns of one
conversation, requests sharing a long system prompt) thus meet on one replica, whose prompt
cache holds their prefix, unless it is already busier than the bound; then they spill to the
next replica on the ring, the same one for every router. A replica's load is weighted by its
*cost*, how long its requests take relative to the others' (:func:`costs`): a replica half as
fast counts each request it holds twice, so it reaches the bound with half the requests and
its share of the spills and of the least-loaded picks falls with its speed. The hash is of the
replicas' addresses, not of any router's state, so every router of a ZetaRouter picks alike without
talking to the others; adding or removing a replica moves only the keys of the ring arcs it
gains or loses.

**least-loaded** takes the replica with the least load; **round-robin** and **random** are there
to compare with. Wherever loads tie, the router's own pod's replica is preferred: it is reached
without leaving the node.

"No replica" is a state: :func:`pick` returns ``None`` when no replica may be tried.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

Strategy = Literal["prefix", "least-loaded", "round-robin", "random"]
STRATEGIES: Final[tuple[Strategy, ...]] = ("prefix", "least-loaded", "round-robin", "random")

#: Points per replica on the ring: enough that keys spread within a few per cent of evenly over
#: a handful of replicas, few enough that building the ring (on every change of the replica set)
#: stays well under a millisecond.
RING_POINTS: Final = 100

#: Why a replica was picked (the ``reason`` of the debug log line).
REASONS: Final = {
    "only": "the tier's only replica that may be tried",
    "prefix": "the first replica on the ring from the prompt prefix's hash",
    "prefix_spill": "a later replica on the ring: the ones before it were over the load bound, "
    "ejected or already tried",
    "least_loaded": "the least loaded replica (the request has no prompt to hash, or the "
    "strategy is least-loaded)",
    "local_tie": "the least loaded, tied with others: this pod's own",
    "round_robin": "the next replica in turn",
    "random": "a replica at random",
    "service": "the tier's Service address: no replica this router knows could be connected to "
    "(it may know only replicas that are gone; the Service knows the ones ready now)",
}


def stable_hash(data: bytes) -> int:
    """A 64-bit hash that every process computes alike (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class Ring:
    """The consistent-hash ring of a set of replicas, given by their identities (addresses as
    every router sees them); replica ``i`` is ``keys[i]``."""

    __slots__ = ("hashes", "owners", "size")

    def __init__(self, keys: Sequence[str]) -> None:
        points = sorted(
            (stable_hash(f"{key}#{p}".encode()), i)
            for i, key in enumerate(keys)
            for p in range(RING_POINTS)
        )
        self.hashes = [h for h, _ in points]
        self.owners = [i for _, i in points]
        self.size = len(keys)

    def walk(self, point: int) -> Iterator[int]:
        """Each replica once, clockwise from ``point``."""
        n = len(self.hashes)
        if n == 0:
            return
        start = bisect.bisect_left(self.hashes, point)
        seen: set[int] = set()
        owners = self.owners
        for step in range(n):
            owner = owners[(start + step) % n]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == self.size:
                    return


@dataclass(frozen=True, slots=True)
class Pick:
    index: int
    reason: str


#: The widest a replica's cost may be from the mean: a replica that answered one request very
#: slowly (or very fast) is not thereby shut out of (or flooded with) requests.
COST_RANGE: Final = 8.0
#: Replicas whose times per request are within this ratio of each other count as equally fast:
#: the times are noisy (prompts and answers differ in length, a cached prefix is quick), and
#: weighting noise would spill prefixes for nothing. A replica really slower (fewer CPUs, a
#: noisy neighbour) is well past it.
COST_SPREAD: Final = 1.5


def load_bound(total: float, candidates: int, load_factor: float) -> int:
    """The most (cost-weighted) load a replica may hold after taking one more request, for
    bounded loads."""
    return math.ceil(load_factor * (total + 1) / candidates)


def costs(seconds: Sequence[float], usable: Sequence[bool]) -> list[float] | None:
    """Each replica's cost per request relative to the mean of the usable ones (1.0: average),
    from ``seconds[i]``, the replica's typical time per request (an average the caller keeps;
    0: not known yet, counted as the mean of the known). None when fewer than two usable
    replicas are known, or when they are all within :data:`COST_SPREAD` of each other: every
    load then counts alike."""
    known = [t for t, ok in zip(seconds, usable, strict=True) if ok and t > 0]
    if len(known) < 2 or max(known) < COST_SPREAD * min(known):
        return None
    mean_known = sum(known) / len(known)
    filled = [t if t > 0 else mean_known for t in seconds]
    mean = sum(t for t, ok in zip(filled, usable, strict=True) if ok) / sum(usable)
    low, high = 1 / COST_RANGE, COST_RANGE
    return [min(high, max(low, t / mean)) for t in filled]


def pick(
    strategy: Strategy,
    ring: Ring,
    loads: Sequence[int],
    usable: Sequence[bool],
    key: int | None,
    *,
    load_factor: float = 1.25,
    local: int | None = None,
    turn: int = 0,
    cost: Sequence[float] | None = None,
) -> Pick | None:
    """The replica for one request: ``loads[i]`` is replica ``i``'s load (requests in progress
    or waiting), ``usable[i]`` whether it may be tried (not ejected, not tried already for this
    request), ``key`` the hash of the request's prompt prefix (None: none), ``local`` this pod's
    own replica, ``turn`` a counter (round robin, and the rotation among ties), ``cost[i]`` the
    weight of each request replica ``i`` holds (:func:`costs`; None: 1 for all)."""
    candidates = [i for i, ok in enumerate(usable) if ok]
    if not candidates:
        return None
    if len(candidates) == 1:
        return Pick(candidates[0], "only")
    if strategy == "round-robin":
        return Pick(candidates[turn % len(candidates)], "round_robin")
    if strategy == "random":
        # ``turn`` is the caller's random draw: this function stays deterministic.
        return Pick(candidates[turn % len(candidates)], "random")
    if cost is None:
        after: Sequence[float] = [n + 1 for n in loads]  # each replica's load, one more taken
        total: float = sum(loads[i] for i in candidates)
    else:
        after = [(n + 1) * c for n, c in zip(loads, cost, strict=True)]
        total = sum(loads[i] * cost[i] for i in candidates)
    if strategy == "prefix" and key is not None:
        bound = load_bound(total, len(candidates), load_factor)
        first = True
        for i in ring.walk(key):
            if not usable[i]:
                first = False
                continue
            # An idle replica always takes its own keys, however slow: as with counts alone
            # (the bound is at least 1), affinity holds on a tier that is not busy.
            if after[i] <= bound or loads[i] == 0:
                return Pick(i, "prefix" if first else "prefix_spill")
            first = False
    least = min(after[i] for i in candidates)
    tied = [i for i in candidates if after[i] == least]
    if local is not None and local in tied and len(tied) > 1:
        return Pick(local, "local_tie")
    return Pick(tied[turn % len(tied)], "least_loaded")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: only the text ones say what the prompt is
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def prefix_key(body: dict[str, Any], chars: int) -> int | None:
    """The hash of the first ``chars`` characters of a request's prompt (None: it has none).

    For chat, the messages up to and including the first user message, with their roles: the
    part every later turn of the conversation repeats unchanged (a key that covered later turns
    would change from turn to turn), and all of a long shared system prompt's requests share
    (when it is longer than ``chars``). For completions, the prompt's beginning."""
    messages = body.get("messages")
    parts: list[str] = []
    size = 0
    if isinstance(messages, list):
        for m in messages:
            if not isinstance(m, dict):
                continue
            role = m.get("role")
            role = role if isinstance(role, str) else ""
            text = f"{role}\x1f{_content_text(m.get('content'))}\x1e"
            parts.append(text)
            size += len(text)
            if size >= chars or role == "user":
                break
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt:
            prompt = prompt[0]
        if isinstance(prompt, str):
            parts.append(prompt[:chars])
            size = len(parts[0])
    if size == 0:
        return None
    text = "".join(parts)[:chars]
    return stable_hash(text.encode("utf-8", "surrogatepass"))
