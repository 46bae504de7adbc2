"""A tier's replica set without servers: names resolved to every address, the fallback when a
name has none, ejection, and tier URLs checked where they enter."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from zeta_router.api.routing import RoutingConfig, base_url
from zeta_router.router.config import (
    ConfigError,
    Tier,
    compile_config,
    parse_config,
    standalone_config,
)
from zeta_router.router.metrics import RouterMetrics
from zeta_router.router.replicas import Replica, Replicas, TierReplicas, expand, names_to_resolve

NAMED = "http://chat-small-replicas.ns.svc:8000"


def tier(*replicas: str, url: str = "http://chat-small.ns.svc:8000") -> Tier:
    return Tier(0, "small", url, None, tuple(replicas))


def test_a_name_is_every_address_it_resolves_to() -> None:
    got = expand(tier(NAMED), {"chat-small-replicas.ns.svc": ("10.0.0.2", "10.0.0.1")}, frozenset())
    assert sorted(r.url for r in got) == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]


def test_the_pods_own_address_is_the_local_replica() -> None:
    got = expand(
        tier(NAMED),
        {"chat-small-replicas.ns.svc": ("10.0.0.1", "10.0.0.2")},
        frozenset({"10.0.0.2"}),
    )
    assert [r.local for r in got] == [False, True]


def test_a_name_without_addresses_falls_back_to_the_tier_url() -> None:
    got = expand(tier(NAMED), {"chat-small-replicas.ns.svc": ()}, frozenset())
    assert [r.url for r in got] == ["http://chat-small.ns.svc:8000"]


def test_a_name_not_resolved_yet_stands_for_itself_and_https_names_stay_names() -> None:
    assert [r.url for r in expand(tier(NAMED), {}, frozenset())] == [NAMED]
    ext = "https://api.example.com"
    assert [r.url for r in expand(tier(ext), {"api.example.com": ("1.2.3.4",)}, frozenset())] == [
        ext
    ]


def test_ipv6_addresses_get_brackets() -> None:
    got = expand(tier(NAMED), {"chat-small-replicas.ns.svc": ("fd00::1",)}, frozenset())
    assert [r.url for r in got] == ["http://[fd00::1]:8000"]


def config(*replicas: str, **balancing: object) -> RoutingConfig:
    return standalone_config([("small", ",".join(replicas))], balancing=balancing)


def llamacpp_config(*replicas: str) -> RoutingConfig:
    """:func:`config` with tiers served by llama.cpp (whose gauges the router reads)."""
    cfg = config(*replicas)
    return cfg.model_copy(
        update={"tiers": [t.model_copy(update={"engine": "llamacpp"}) for t in cfg.tiers]}
    )


def replica_set(cfg: RoutingConfig, answers: dict[str, tuple[str, ...] | None]) -> Replicas:
    async def resolver(host: str) -> tuple[str, ...] | None:
        return answers.get(host)

    return Replicas(compile_config(cfg), RouterMetrics(), frozenset(), seed=1, resolver=resolver)


def test_resolution_follows_the_name_and_keeps_the_last_answer_when_it_cannot_tell() -> None:
    answers: dict[str, tuple[str, ...] | None] = {"replicas.local": ("10.0.0.1",)}
    reps = replica_set(config("http://replicas.local:8000"), answers)
    small = reps.config.tiers[0]

    def now() -> list[str]:
        return [r.url for r in reps.of(small).replicas]

    assert now() == ["http://replicas.local:8000"]
    asyncio.run(reps.resolve_all())
    assert now() == ["http://10.0.0.1:8000"]
    answers["replicas.local"] = ("10.0.0.1", "10.0.0.3")
    asyncio.run(reps.resolve_all())
    assert now() == ["http://10.0.0.1:8000", "http://10.0.0.3:8000"]
    answers["replicas.local"] = None  # the resolver cannot tell now
    asyncio.run(reps.resolve_all())
    assert now() == ["http://10.0.0.1:8000", "http://10.0.0.3:8000"]
    answers["replicas.local"] = ()  # no ready pod: the tier's own URL
    asyncio.run(reps.resolve_all())
    assert now() == ["http://replicas.local:8000"]


def test_a_failing_replica_is_ejected_then_tried_only_when_no_other_is_left() -> None:
    reps = replica_set(config("http://127.0.0.1:1", "http://127.0.0.1:2", ejectionSeconds=5.0), {})
    small = reps.config.tiers[0]
    a, b = reps.of(small).replicas
    assert reps.failed(small, a, now=100.0)
    for _ in range(20):
        chosen = reps.choose(small, None, (), now=101.0)
        assert chosen is not None
        assert chosen[0] == b
    # Everything else tried: the ejected one rather than nothing.
    chosen = reps.choose(small, None, (b.url,), now=101.0)
    assert chosen is not None
    assert chosen[0] == a
    # Every replica tried: no replica, as a state.
    assert reps.choose(small, None, (a.url, b.url), now=101.0) is None
    # The ejection ends.
    assert {reps.choose(small, None, (), now=106.0 + i)[0] for i in range(20)} == {a, b}  # type: ignore[index]


def test_loads_come_from_the_router_and_the_replicas_own_gauges() -> None:
    reps = replica_set(llamacpp_config("http://127.0.0.1:1", "http://127.0.0.1:2"), {})
    small = reps.config.tiers[0]
    a, b = reps.of(small).replicas
    reps.begin(a)
    texts = {a.url: None, b.url: "llamacpp:requests_processing 2\nllamacpp:requests_deferred 3\n"}

    async def fetch(url: str) -> str | None:
        return texts[url]

    asyncio.run(reps.read_loads(fetch))
    assert reps.state(a).load() == 1
    assert reps.state(b).load() == 5
    chosen = reps.choose(small, None, (), now=0.0)
    assert chosen is not None
    assert chosen[0] == a


def test_a_request_of_its_own_that_ended_since_the_gauges_were_read_no_longer_counts() -> None:
    """The gauges count this router's requests of the moment they were read as well as the
    other routers'; what they held beyond this router's own is the others' load. Between reads,
    this router's own count moves at once: an ended request stops counting before the next
    read, and a new one counts from its start."""
    reps = replica_set(llamacpp_config("http://127.0.0.1:1", "http://127.0.0.1:2"), {})
    small = reps.config.tiers[0]
    a, b = reps.of(small).replicas
    reps.begin(a)
    reps.begin(a)
    gauges = {a.url: 3, b.url: 0}

    async def fetch(url: str) -> str | None:
        return f"llamacpp:requests_processing {gauges[url]}\nllamacpp:requests_deferred 0\n"

    asyncio.run(reps.read_loads(fetch))
    assert reps.state(a).load() == 3  # two of this router's, one of another's
    reps.end(a)
    assert reps.state(a).load() == 2  # not 3 until the next read
    reps.begin(b)
    assert reps.state(b).load() == 1
    # Gauges that have not yet counted this router's requests count no others (never below
    # this router's own).
    reps.begin(a)
    gauges[a.url] = 1
    asyncio.run(reps.read_loads(fetch))
    assert reps.state(a).load() == 2
    assert reps.state(b).load() == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:8001,http://127.0.0.1:8002", "comma"),
        ("http://127.0.0.1:80x1", "not usable"),
        ("ftp://h", "must start with"),
        ("http://:8000", "no host"),
        ("http://u:p@h:1", "credentials"),
        ("http://h:1/?q=1", "query"),
        ("http://h:0", "port 0"),
    ],
)
def test_unusable_tier_urls_are_refused_in_the_routing_file(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        base_url(url)
    text = f"tiers: [{{name: s, url: '{url}'}}]\ncontexts: [{{name: d, thresholds: []}}]\n"
    with pytest.raises(ConfigError, match=message):
        parse_config(text + "defaultContext: d\n")
    text = (
        f"tiers: [{{name: s, url: 'http://h:1', replicas: ['{url}']}}]\n"
        "contexts: [{name: d, thresholds: []}]\ndefaultContext: d\n"
    )
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_a_tier_flag_lists_its_replicas() -> None:
    cfg = standalone_config([("small", "http://127.0.0.1:8001/v1, http://127.0.0.1:8002")])
    assert cfg.tiers[0].replicas == ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    with pytest.raises(ConfigError, match="twice"):
        standalone_config([("small", "http://127.0.0.1:8001,http://127.0.0.1:8001/")])
    with pytest.raises(ConfigError, match="must start with"):
        standalone_config([("small", "http://127.0.0.1:8001,http:")])


def test_the_command_line_refuses_an_unusable_tier_url_before_starting() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "zeta_router", "router", "--tier", "small=http://127.0.0.1:80x1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "80x1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_replica_is_its_url() -> None:
    assert Replica("http://10.0.0.1:8000") == Replica("http://10.0.0.1:8000")


def test_a_tier_with_no_replica_is_a_state_not_an_error() -> None:
    reps = replica_set(config("http://127.0.0.1:1"), {})
    small = reps.config.tiers[0]
    reps.tiers[small.name] = TierReplicas.of([])  # asleep, or all gone
    assert reps.choose(small, None, (), now=0.0) is None
    assert reps.choose(small, 12345, (), now=0.0) is None
    assert not reps.multiple(small)


def test_a_replica_slow_per_request_held_gets_fewer_least_loaded_picks() -> None:
    """A request's time counts divided by the requests its replica held: a busy replica is not
    thereby slow; one twice as slow per request held loses the ties to the faster."""
    reps = replica_set(config("http://10.0.0.1:8000", "http://10.0.0.2:8000"), {})
    small = reps.config.tiers[0]
    fast, slow = reps.of(small).replicas
    for _ in range(5):
        reps.succeeded(fast, 4.0, 4)  # busy: 1 s per request held
        reps.succeeded(slow, 2.0, 1)  # idle but slow: 2 s
    assert reps.state(fast).seconds == pytest.approx(1.0)
    assert reps.state(slow).seconds == pytest.approx(2.0)
    picks = []
    for _ in range(6):  # loads 0/0 at first: alike in count, not in time
        chosen = reps.choose(small, None, (), 0.0)
        assert chosen is not None
        picks.append(chosen[0])
        reps.begin(chosen[0])
    assert picks.count(fast) == 4
    assert picks.count(slow) == 2


def test_a_tiers_service_name_is_resolved_ahead_and_kept_while_the_resolver_cannot_tell() -> None:
    cfg = RoutingConfig.model_validate(
        {
            "tiers": [
                {
                    "name": "small",
                    "url": "http://chat-small.ns.svc:8000",
                    "replicas": ["http://chat-small-replicas.ns.svc:8000"],
                },
                {"name": "large", "url": "http://127.0.0.1:8001"},
            ],
            "contexts": [{"name": "default", "thresholds": [0.5]}],
            "defaultContext": "default",
        }
    )
    answers: dict[str, tuple[str, ...] | None] = {"chat-small.ns.svc": ("10.96.0.7",)}
    reps = replica_set(cfg, answers)
    assert names_to_resolve(reps.config.tiers) == {
        "chat-small.ns.svc",
        "chat-small-replicas.ns.svc",
    }
    assert reps.known_addresses("chat-small.ns.svc") is None  # not resolved yet
    asyncio.run(reps.resolve_all())
    assert reps.known_addresses("chat-small.ns.svc") == ("10.96.0.7",)
    answers["chat-small.ns.svc"] = None  # a resolver that times out keeps nothing from us
    asyncio.run(reps.resolve_all())
    assert reps.known_addresses("chat-small.ns.svc") == ("10.96.0.7",)
    answers["chat-small.ns.svc"] = ()  # the Service is gone: connections resolve the name
    asyncio.run(reps.resolve_all())
    assert reps.known_addresses("chat-small.ns.svc") is None
