"""A tier's replicas as the router sees them: where they are (the tier's replica URLs, names
resolved to every address again and again), how loaded each is (this router's requests in
progress, and the replica's own gauges of requests running and waiting, read from its
``/metrics``), and which are ejected for failing. :mod:`.picker` decides; this module feeds it
and keeps the I/O (name resolution, metrics reads) in two background loops.

A replica is known by its URL (``http://10.1.2.3:8000``), the same for every router, so every
router builds the same ring. A name that resolves to no address (a headless Service of a tier
at zero ready pods) gives no replica; a tier whose sources all give none falls back to its
``url`` (its ClusterIP Service, or for the router's own tier the model server in its pod). A
name that cannot be resolved right now (the resolver fails, or has not answered yet) keeps its
last addresses, or stands for itself until it first resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from zeta_router.api.routing import Balancing, is_ip_literal
from zeta_router.router.config import RuntimeConfig, Tier
from zeta_router.router.lifecycle import in_flight
from zeta_router.router.metrics import RouterMetrics
from zeta_router.router.picker import Pick, Ring, costs, pick

log = logging.getLogger("zeta_router.router.replicas")

#: Resolver answers that mean "this name has no address" (as opposed to "cannot tell now").
NO_SUCH_NAME = frozenset(
    getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n)
)
#: Longest a name resolution or a metrics read may take.
IO_SECONDS = 2.0
#: Weight of a request's time in its replica's average time per request: the average follows
#: a replica that slows down (or recovers) within some ten requests.
SECONDS_WEIGHT = 0.2


#: The pick of a tier's only replica (most tiers, most of the time: allocated once).
ONLY = Pick(0, "only")


@dataclass(frozen=True, slots=True)
class Replica:
    url: str  # base URL: how the router reaches it, and its identity on the ring
    local: bool = False  # the model server in this router's own pod


@dataclass(slots=True)
class ReplicaState:
    """What a router knows of one replica between requests."""

    outstanding: int = 0  # this router's requests in progress there
    # Requests the replica's own gauges (running and waiting) counted beyond this router's
    # own when they were read: other routers' requests, as of the last read.
    others: int = 0
    failures: int = 0  # consecutive
    ejected_until: float = 0.0  # monotonic seconds
    seconds: float = 0.0  # time per request per request held, a moving average (0: none yet)

    def load(self) -> int:
        # The gauges cover every router's requests but are up to a metrics interval old; this
        # router's count is exact for its own. So its own now, plus the others' as last read:
        # a request of its own that ended since the read no longer counts (taking the larger
        # of the two counts kept it until the next read, and spilled prefixes for nothing).
        return self.outstanding + self.others


@dataclass(frozen=True, slots=True)
class TierReplicas:
    """One tier's replicas at one moment (rebuilt whenever the set changes)."""

    replicas: tuple[Replica, ...]
    ring: Ring
    local: int | None  # index of the pod's own replica, when exactly one is

    @staticmethod
    def of(replicas: Sequence[Replica]) -> TierReplicas:
        ordered = tuple(sorted(set(replicas), key=lambda r: r.url))
        locals_ = [i for i, r in enumerate(ordered) if r.local]
        return TierReplicas(
            ordered, Ring([r.url for r in ordered]), locals_[0] if len(locals_) == 1 else None
        )


def _host_url(scheme: str, address: str, port: int, path: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{scheme}://{host}:{port}{path}"


def expand(
    tier: Tier, resolved: Mapping[str, tuple[str, ...] | None], local_addresses: frozenset[str]
) -> list[Replica]:
    """The replicas of ``tier`` given what its names resolved to (``resolved[host]``: the
    addresses, ``()`` for a name without any, absent or None while unknown). Pure."""
    out: list[Replica] = []
    for source in tier.replicas:
        parts = urlsplit(source)
        host = parts.hostname or ""
        if parts.scheme != "http" or is_ip_literal(host):
            # An address is itself; an https name stays a name (TLS checks it).
            out.append(Replica(source, host in local_addresses))
            continue
        addresses = resolved.get(host)
        if addresses is None:
            out.append(Replica(source))
            continue
        port = parts.port or 80
        out.extend(
            Replica(_host_url("http", a, port, parts.path), a in local_addresses) for a in addresses
        )
    if not out:
        out.append(Replica(tier.url, urlsplit(tier.url).hostname in ("127.0.0.1", "::1")))
    return out


def names_to_resolve(tiers: Sequence[Tier]) -> set[str]:
    """The names to resolve in the background: every replica name (to expand it into its
    addresses) and every cluster tier's own URL (its Service: connections then go to the
    address last resolved, not through the resolver at request time; a ClusterIP never changes
    while its Service exists, and one dropped resolver packet can cost seconds)."""
    sources = [s for t in tiers for s in t.replicas] + [t.url for t in tiers if t.external is None]
    return {
        host
        for source in sources
        if urlsplit(source).scheme == "http"
        and (host := urlsplit(source).hostname or "")
        and not is_ip_literal(host)
        and host != "localhost"
    }


def own_addresses() -> frozenset[str]:
    """The addresses of this pod (its model server is the local replica): the pod IP from the
    environment where the pod template passes it, and what the host name resolves to (in a pod,
    its IP)."""
    found = {a for a in (os.environ.get("POD_IP"), os.environ.get("ZETA_POD_IP")) if a}
    with contextlib.suppress(OSError):
        found.update(socket.gethostbyname_ex(socket.gethostname())[2])
    found.discard("127.0.0.1")
    return frozenset(found)


Resolver = Callable[[str], Awaitable[tuple[str, ...] | None]]
#: Reads a replica's /metrics text (None: no answer).
MetricsFetch = Callable[[str], Awaitable[str | None]]


async def resolve(host: str) -> tuple[str, ...] | None:
    """Every address of ``host`` (IPv4 when it has any, else IPv6), ``()`` when it has none,
    None when the resolver cannot tell now."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(IO_SECONDS):
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return () if exc.errno in NO_SUCH_NAME else None
    except (OSError, TimeoutError):
        return None
    v4 = sorted({str(i[4][0]) for i in infos if i[0] == socket.AF_INET})
    v6 = sorted({str(i[4][0]) for i in infos if i[0] == socket.AF_INET6})
    return tuple(v4 or v6)


@dataclass
class Replicas:
    """Every tier's replicas, their state, and the choice of one per request."""

    config: RuntimeConfig
    metrics: RouterMetrics
    local_addresses: frozenset[str] = field(default_factory=own_addresses)
    seed: int | None = None
    resolver: Resolver | None = None  # tests inject one

    def __post_init__(self) -> None:
        self.settings: Balancing = self.config.source.balancing
        self.resolved: dict[str, tuple[str, ...] | None] = {}
        self.tiers: dict[str, TierReplicas] = {}
        self.states: dict[str, ReplicaState] = {}
        self._turn = 0
        self._random = random.Random(self.seed)
        #: Called after the replica set changed (the upstream pools of replicas gone close).
        self.on_change: Callable[[], None] | None = None
        self.reconfigure(self.config)

    # -- the replica sets --------------------------------------------------------------------

    def reconfigure(self, config: RuntimeConfig) -> None:
        self.config = config
        self.settings = config.source.balancing
        self._rebuild()

    def _rebuild(self) -> None:
        tiers: dict[str, TierReplicas] = {}
        for t in self.config.tiers:
            fresh = TierReplicas.of(expand(t, self.resolved, self.local_addresses))
            old = self.tiers.get(t.name)
            if old is not None and old.replicas == fresh.replicas:
                fresh = old  # the same set: keep the ring
            elif old is not None or len(fresh.replicas) > 1:
                log.info(
                    "tier replicas changed",
                    extra={
                        "event": "replicas_changed",
                        "tier": t.name,
                        "replicas": [r.url for r in fresh.replicas],
                    },
                )
            tiers[t.name] = fresh
        self.tiers = tiers
        urls = self.urls()
        for url in [u for u, s in self.states.items() if u not in urls and s.outstanding == 0]:
            del self.states[url]
        gauge = self.metrics.replicas
        gauge.clear()
        for name, tr in tiers.items():
            gauge.labels(name).set(len(tr.replicas))
        if self.on_change is not None:
            self.on_change()

    def urls(self) -> set[str]:
        """Every replica's URL, every tier."""
        return {r.url for tr in self.tiers.values() for r in tr.replicas}

    def known_addresses(self, host: str) -> tuple[str, ...] | None:
        """The addresses ``host`` resolved to last (None: none known; the pool resolves it)."""
        return self.resolved.get(host) or None

    def multiple(self, tier: Tier) -> bool:
        """Whether the tier has replicas to choose between."""
        return len(self.of(tier).replicas) > 1

    def of(self, tier: Tier) -> TierReplicas:
        found = self.tiers.get(tier.name)
        if found is None:  # a tier of a configuration not adopted (yet): itself
            found = TierReplicas.of(expand(tier, self.resolved, self.local_addresses))
        return found

    def state(self, replica: Replica) -> ReplicaState:
        s = self.states.get(replica.url)
        if s is None:
            s = self.states[replica.url] = ReplicaState()
        return s

    # -- choosing ----------------------------------------------------------------------------

    def choose(
        self, tier: Tier, key: int | None, tried: Sequence[str], now: float
    ) -> tuple[Replica, Pick] | None:
        """The replica for the next try of a request on ``tier`` (None: none left to try).
        Ejected replicas are left out while others remain; when all that are not tried yet are
        ejected, they are tried anyway: ejection steers among replicas, the tier's breaker
        says whether the tier is down."""
        tr = self.of(tier)
        replicas = tr.replicas
        if len(replicas) == 1 and not tried:
            return replicas[0], ONLY
        states = [self.state(r) for r in replicas]
        if tried:
            fresh = [r.url not in tried for r in replicas]
            usable = [f and s.ejected_until <= now for f, s in zip(fresh, states, strict=True)]
            if not any(usable):
                usable = fresh
        else:
            usable = [s.ejected_until <= now for s in states]
            if not any(usable):
                usable = [True] * len(replicas)
        st = self.settings
        self._turn += 1
        turn = self._random.randrange(1 << 30) if st.strategy == "random" else self._turn
        chosen = pick(
            st.strategy,
            tr.ring,
            [s.load() for s in states],
            usable,
            key,
            load_factor=st.load_factor,
            local=tr.local,
            turn=turn,
            cost=costs([s.seconds for s in states], usable),
        )
        if chosen is None:
            return None
        return replicas[chosen.index], chosen

    # -- outcomes ----------------------------------------------------------------------------

    def begin(self, replica: Replica) -> None:
        self.state(replica).outstanding += 1

    def end(self, replica: Replica) -> None:
        s = self.state(replica)
        s.outstanding = max(0, s.outstanding - 1)

    def succeeded(self, replica: Replica, seconds: float | None = None, held: int = 1) -> None:
        """A request answered by ``replica`` in ``seconds`` (its whole answer; None: not
        measured), sent when the replica held ``held`` requests with it. A replica shares
        itself among the requests it holds, so a request's time divided by them is the
        replica's speed, whatever its load: a replica busier than another is not thereby slower
        (its load counts already)."""
        s = self.state(replica)
        s.failures = 0
        if seconds is None:
            return
        t = seconds / max(1, held)
        s.seconds = t if s.seconds <= 0 else s.seconds + SECONDS_WEIGHT * (t - s.seconds)

    def failed(self, tier: Tier, replica: Replica, now: float) -> bool:
        """Count a failure of ``replica``; True when it ejects the replica."""
        s = self.state(replica)
        s.failures += 1
        st = self.settings
        if s.failures < st.ejection_failures or s.ejected_until > now:
            return False
        s.ejected_until = now + st.ejection_seconds
        s.failures = 0
        self.metrics.replica_ejection(tier.name, replica.url)
        log.warning(
            "replica ejected",
            extra={
                "event": "replica_ejected",
                "tier": tier.name,
                "replica": replica.url,
                "seconds": st.ejection_seconds,
            },
        )
        return True

    # -- background: names and load metrics ---------------------------------------------------

    async def resolve_all(self) -> None:
        """Resolve every replica name once and adopt what changed."""
        names = names_to_resolve(self.config.tiers)
        if not names:
            return
        resolver = self.resolver or resolve
        hosts = sorted(names)
        results = await asyncio.gather(*(resolver(h) for h in hosts))
        changed = False
        for host, addresses in zip(hosts, results, strict=True):
            if addresses is None and host in self.resolved:
                continue  # cannot tell now: keep what was known
            if self.resolved.get(host) != addresses:
                self.resolved[host] = addresses
                changed = True
        for host in [h for h in self.resolved if h not in names]:
            del self.resolved[host]
        if changed:
            self._rebuild()

    async def resolve_loop(self) -> None:
        while True:
            try:
                await self.resolve_all()
            except Exception:  # the loop must outlive any one bad answer
                log.exception("replica resolution failed", extra={"event": "resolve_failed"})
            await asyncio.sleep(self.settings.resolve_seconds)

    async def read_loads(self, fetch: MetricsFetch) -> None:
        """Read every replica's own gauges once (``fetch(url)`` returns its /metrics text or
        None). A replica that does not answer in time keeps what it reported last: a busy
        replica answers late, and busy is not idle (one that is gone is ejected by its
        failures, and forgotten when it leaves the set)."""
        # (an external provider's /metrics is not ours to read)
        engines = {t.name: t.engine for t in self.config.tiers if t.external is None}
        work: list[tuple[Replica, str]] = [
            (r, engines[name])
            for name, tr in self.tiers.items()
            if name in engines
            for r in tr.replicas
        ]
        if len(work) <= len(engines):
            return  # one replica per tier: nothing to choose between

        async def read(replica: Replica, engine: str) -> None:
            try:
                text = await fetch(replica.url)
            except Exception:  # one replica's bad answer must not lose the others'
                return
            held = in_flight(text, engine) if isinstance(text, str) else None
            if held is not None:
                # Taken as the answer arrives: the gauges count this router's requests of
                # that moment too (a request the replica has not registered yet, or has
                # finished while its answer is still on its way, counts for none).
                s = self.state(replica)
                s.others = max(0, int(held) - s.outstanding)

        await asyncio.gather(*(read(r, engine) for r, engine in work))

    async def load_loop(self, fetch: MetricsFetch) -> None:
        while True:
            seconds = self.settings.metrics_seconds
            if seconds <= 0:  # off (a reload may turn it on)
                for s in self.states.values():
                    s.others = 0
                await asyncio.sleep(1.0)
                continue
            try:
                await self.read_loads(fetch)
            except Exception:
                log.exception("replica metrics read failed", extra={"event": "load_read_failed"})
            await asyncio.sleep(seconds)
