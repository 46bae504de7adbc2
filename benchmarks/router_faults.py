"""Soak with faults: a mixed client workload through the router for ten minutes while faults are
injected on a schedule, and an account of every request.

    .venv/bin/python benchmarks/router_faults.py [--minutes 10] [--rate 100] [--quick]

Parts (all real processes on 127.0.0.1): two tiers ``small`` and ``large``, each the fake
OpenAI-compatible upstream of tests/support/fake_upstream.py (faults on demand), and the router
as its real command line, reading a routing file (as from the ConfigMap).

Workload (``--rate`` requests/s, ``--concurrency`` at most in flight): single-turn chats,
streamed chats, completions, three-turn conversations, feedback posts on earlier answers, and a
share of bad requests (which must get a 4xx, not counted as failures). Beside it, slow clients:
idle sockets, headers sent a byte at a time, bodies that stop.

Faults, one phase after another (each lasts ``minutes / phases``); at most one tier is faulty at
a time, so a healthy tier always exists:
  healthy; small down (process stopped, then restarted on its port); small hanging (no answer);
  small breaking answers mid-body (non-streamed) and streams before their first event; large
  answering 503; large answering 200 with a body that is not JSON; small cutting every answer
  mid-body, streams after their first event (those reached the client: they cannot fail over and
  end with an error event, until the breaker opens); a garbage routing file, then a good one
  with other thresholds, each followed by SIGHUP; a burst of slow clients.

Printed: requests sent, answered, failed by cause, and lost (sent but neither answered nor
refused: no HTTP answer at all); the same per phase; and the router's own count
(zeta_router_requests_total) against the client's. Never fails on figures: it prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.fake_upstream import FakeUpstream, start_fake_upstream  # noqa: E402
from zeta_router_dev.local.router_proc import RouterProcess, start_router  # noqa: E402

HARD = (
    "Prove that the square root of 2 is irrational, step by step, then derive a closed form for "
    "the sum of the first n squares and prove it by induction; explain why it works."
)


def routing(small: str, large: str, cut: float, generation: int) -> dict[str, Any]:
    return {
        "generation": generation,
        "router": "zeta",
        "tiers": [
            {"name": "small", "url": small, "localUrl": small, "engine": "llamacpp"},
            {"name": "large", "url": large, "engine": "llamacpp"},
        ],
        "contexts": [{"name": "default", "thresholds": [cut]}],
        "defaultContext": "default",
        "timeouts": {"connectSeconds": 2, "firstByteSeconds": 2, "totalSeconds": 20},
        "circuitBreaker": {"failureThreshold": 3, "openSeconds": 2},
    }


# -- the account ---------------------------------------------------------------------------------


@dataclass
class Account:
    sent: Counter[str] = field(default_factory=Counter)  # by kind
    answered: Counter[str] = field(default_factory=Counter)  # by kind (2xx, complete)
    expected: Counter[str] = field(default_factory=Counter)  # bad requests that got their 4xx
    failed: Counter[str] = field(default_factory=Counter)  # by cause
    lost: Counter[str] = field(default_factory=Counter)  # by transport error
    by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    routed: int = 0  # chat/completion requests sent (what the router should have counted)

    def record(self, phase: str, kind: str, outcome: str, cause: str = "") -> None:
        p = self.by_phase.setdefault(phase, Counter())
        p["sent"] += 1
        p[outcome] += 1
        if outcome == "answered":
            self.answered[kind] += 1
        elif outcome == "expected":
            self.expected[kind] += 1
        elif outcome == "failed":
            self.failed[cause] += 1
        else:
            self.lost[cause] += 1


# -- the workload --------------------------------------------------------------------------------


class Workload:
    def __init__(self, base: str, account: Account, rng: random.Random) -> None:
        self.base = base
        self.account = account
        self.rng = rng
        self.phase = "start"
        self.answered_ids: list[str] = []

    async def one(self, session: aiohttp.ClientSession) -> None:
        r = self.rng.random()
        if r < 0.45:
            await self._chat(session, "chat", self._messages(), stream=False)
        elif r < 0.65:
            await self._chat(session, "stream", self._messages(), stream=True)
        elif r < 0.75:
            await self._completion(session)
        elif r < 0.85:
            await self._conversation(session)
        elif r < 0.92:
            await self._bad(session)
        else:
            await self._feedback(session)

    def _messages(self) -> list[dict[str, str]]:
        text = HARD if self.rng.random() < 0.3 else f"hello {self.rng.randrange(10**6)}"
        return [{"role": "user", "content": text}]

    async def _post(
        self,
        session: aiohttp.ClientSession,
        kind: str,
        path: str,
        body: bytes,
        check: Callable[[int, bytes, aiohttp.ClientResponse], tuple[str, str]],
    ) -> tuple[str, bytes, aiohttp.ClientResponse | None]:
        phase = self.phase
        self.account.sent[kind] += 1
        try:
            async with session.post(
                self.base + path, data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                data = await resp.read()
                outcome, cause = check(resp.status, data, resp)
                self.account.record(phase, kind, outcome, cause)
                return outcome, data, resp
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.account.record(phase, kind, "lost", type(exc).__name__)
            return "lost", b"", None

    @staticmethod
    def _check_answer(status: int, data: bytes, resp: aiohttp.ClientResponse) -> tuple[str, str]:
        if status != 200:
            try:
                code = json.loads(data)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "?"
            return "failed", f"HTTP {status} {code}"
        if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
            events = [ln[6:] for ln in data.decode().split("\n") if ln.startswith("data: ")]
            if not events or events[-1] != "[DONE]":
                try:
                    code = json.loads(events[-1])["error"]["code"] if events else "empty"
                except (ValueError, KeyError, TypeError):
                    code = "no [DONE]"
                return "failed", f"stream ended with an error event ({code})"
            return "answered", ""
        try:
            json.loads(data)["choices"]
        except (ValueError, KeyError, TypeError):
            return "failed", "200 with a body that is not an answer"
        return "answered", ""

    async def _chat(
        self,
        session: aiohttp.ClientSession,
        kind: str,
        messages: list[dict[str, str]],
        stream: bool,
    ) -> str | None:
        self.account.routed += 1
        body = json.dumps({"model": "zeta", "messages": messages, "stream": stream}).encode()
        outcome, data, resp = await self._post(
            session, kind, "/v1/chat/completions", body, self._check_answer
        )
        if outcome == "answered" and resp is not None:
            self.answered_ids.append(resp.headers["x-request-id"])
            if len(self.answered_ids) > 1000:
                del self.answered_ids[:500]
            if not stream:
                return str(json.loads(data)["choices"][0]["message"]["content"])
        return None

    async def _completion(self, session: aiohttp.ClientSession) -> None:
        self.account.routed += 1
        body = json.dumps({"model": "zeta", "prompt": "Once upon a time"}).encode()
        await self._post(session, "completion", "/v1/completions", body, self._check_answer)

    async def _conversation(self, session: aiohttp.ClientSession) -> None:
        messages = self._messages()
        for turn in range(3):
            answer = await self._chat(session, "conversation turn", messages, stream=False)
            if answer is None:
                return
            messages = [
                *messages,
                {"role": "assistant", "content": answer},
                {"role": "user", "content": f"and then? ({turn})"},
            ]

    async def _bad(self, session: aiohttp.ClientSession) -> None:
        self.account.routed += 1
        body = self.rng.choice(
            [
                b"{not json",
                b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
                b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
                b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                b'{"messages": []}',
            ]
        )

        def check(status: int, data: bytes, resp: aiohttp.ClientResponse) -> tuple[str, str]:
            if status == 400:
                return "expected", ""
            return "failed", f"bad request answered {status}"

        await self._post(session, "bad request", "/v1/chat/completions", body, check)

    async def _feedback(self, session: aiohttp.ClientSession) -> None:
        if not self.answered_ids:
            return
        rid = self.answered_ids.pop(self.rng.randrange(len(self.answered_ids)))
        body = json.dumps({"request_id": rid, "score": self.rng.random()}).encode()

        def check(status: int, data: bytes, resp: aiohttp.ClientResponse) -> tuple[str, str]:
            return ("answered", "") if status == 200 else ("failed", f"feedback {status}")

        await self._post(session, "feedback", "/v1/feedback", body, check)


async def run_load(work: Workload, rate: float, concurrency: int, stop: asyncio.Event) -> None:
    conn = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        start = time.monotonic()
        n = 0
        while not stop.is_set():
            due = start + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            n += 1
            await slots.acquire()

            async def one() -> None:
                try:
                    await work.one(session)
                finally:
                    slots.release()

            t = asyncio.get_running_loop().create_task(one())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


# -- slow clients --------------------------------------------------------------------------------


async def slow_clients(port: int, seconds: float, counts: Counter[str]) -> None:
    """Idle sockets, headers a byte at a time, bodies that stop: all must be cut off by the
    router without disturbing anyone else."""

    async def idle() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await asyncio.wait_for(reader.read(), seconds)
            counts["idle socket closed by the router"] += 1
        except TimeoutError:
            counts["idle socket still open"] += 1
        except OSError:
            counts["idle socket reset"] += 1
        writer.close()

    async def trickle_headers() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end and not reader.at_eof():
                writer.write(b"X")
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(1), 1.0):
                        counts["slow headers answered (408)"] += 1
                        break
                except TimeoutError:
                    continue
        except OSError:
            counts["slow headers closed"] += 1
        writer.close()

    async def stalled_body() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b'\r\nContent-Length: 1000\r\n\r\n{"messages"'
        )
        try:
            line = await asyncio.wait_for(reader.readline(), seconds)
            counts["stalled body answered " + line.decode(errors="replace").split(" ")[1]] += 1
        except (TimeoutError, OSError, IndexError):
            counts["stalled body not answered"] += 1
        writer.close()

    jobs: list[Awaitable[None]] = []
    jobs += [idle() for _ in range(100)]
    jobs += [trickle_headers() for _ in range(30)]
    jobs += [stalled_body() for _ in range(30)]
    await asyncio.gather(*jobs, return_exceptions=True)


# -- faults --------------------------------------------------------------------------------------


class Faults:
    def __init__(
        self,
        tiers: dict[str, FakeUpstream],
        router: RouterProcess,
        config: Path,
        workdir: Path,
        slow: Counter[str],
    ) -> None:
        self.tiers = tiers
        self.router = router
        self.config = config
        self.workdir = workdir
        self.slow = slow
        self.generation = 1

    def control(self, tier: str, **settings: Any) -> None:
        self.tiers[tier].control(**settings)

    def heal(self) -> None:
        for name, t in self.tiers.items():
            if t.process.poll() is not None:
                self.tiers[name] = start_fake_upstream(self.workdir / f"{name}.log", port=t.port)
            self.tiers[name].control(
                status=200, hang=False, body_fault=None, abort_after=None, no_done=False, chunks=3
            )

    def write_config(self, text: str) -> None:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config)
        self.router.process.send_signal(signal.SIGHUP)

    def phases(self) -> list[tuple[str, Callable[[], Awaitable[None]] | None]]:
        async def small_down() -> None:
            self.tiers["small"].stop()

        async def small_hangs() -> None:
            self.control("small", hang=True)

        async def small_breaks() -> None:
            self.control("small", body_fault="break", abort_after=0)

        async def large_503() -> None:
            self.control("large", status=503)

        async def large_garbage() -> None:
            self.control("large", body_fault="garbage")

        async def cut_mid_answer() -> None:
            # Every answer breaks: non-streamed mid-body (fails over), streams after their
            # first event (already at the client: ends with an error event).
            self.control("small", body_fault="break", abort_after=1, chunks=3)

        async def configs() -> None:
            self.write_config("tiers: [this is: not valid")
            await asyncio.sleep(3)
            self.generation += 1
            small, large = (t.url for t in self.tiers.values())
            cut = 0.2 + 0.6 * (self.generation % 2)
            self.write_config(yaml.safe_dump(routing(small, large, cut, self.generation)))

        async def slow_burst() -> None:
            asyncio.get_running_loop().create_task(slow_clients(self.router.port, 20.0, self.slow))

        return [
            ("healthy", None),
            ("small down", small_down),
            ("small hanging", small_hangs),
            ("small breaking answers", small_breaks),
            ("large answering 503", large_503),
            ("large answering non-JSON 200", large_garbage),
            ("small cutting every answer mid-body", cut_mid_answer),
            ("garbage config, then a new one (SIGHUP)", configs),
            ("slow clients", slow_burst),
            ("healthy again", None),
        ]


# -- main ----------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, workdir: Path) -> None:
    tiers = {n: start_fake_upstream(workdir / f"{n}.log") for n in ("small", "large")}
    config = workdir / "routing.yaml"
    config.write_text(yaml.safe_dump(routing(tiers["small"].url, tiers["large"].url, 0.5, 1)))
    key = workdir / "router-key"
    key.write_text(os.urandom(32).hex() + "\n")
    router = start_router(
        [
            *("--config", str(config), "--local-tier", "small", "--reload-interval", "3600"),
            *("--request-key-file", str(key), "--log-level", "warning"),
            *("--header-timeout", "2", "--body-timeout", "2", "--idle-timeout", "5"),
        ],
        workdir,
    )
    account = Account()
    slow: Counter[str] = Counter()
    faults = Faults(tiers, router, config, workdir, slow)
    work = Workload(router.url, account, random.Random(args.seed))
    stop = asyncio.Event()
    load = asyncio.get_running_loop().create_task(run_load(work, args.rate, args.concurrency, stop))
    phases = faults.phases()
    phase_seconds = args.minutes * 60 / len(phases)
    started = time.monotonic()
    try:
        for name, inject in phases:
            work.phase = name
            print(f"[{time.monotonic() - started:6.1f}s] phase: {name}", flush=True)
            if inject is not None:
                await inject()
            await asyncio.sleep(phase_seconds)
            await asyncio.to_thread(faults.heal)
        stop.set()
        await load
        await asyncio.sleep(1)
        counted = router.metric("zeta_router_requests_total")
        refused = router.metric("zeta_router_connections_refused_total")
        timeouts = {
            p: router.metric("zeta_router_client_timeouts_total", phase=p)
            for p in ("headers", "body", "idle")
        }
        tier_failures = router.metric("zeta_router_tier_failures_total")
        config_errors = router.metric("zeta_router_config_errors_total")
        generation = router.metric("zeta_router_config_generation")
    finally:
        stop.set()
        rc = router.stop()
        for t in faults.tiers.values():
            t.stop()
    report(
        args,
        account,
        slow,
        counted=counted,
        refused=refused,
        timeouts=timeouts,
        tier_failures=tier_failures,
        config_errors=config_errors,
        generation=generation,
        rc=rc,
        elapsed=time.monotonic() - started,
    )


def report(args: argparse.Namespace, a: Account, slow: Counter[str], **m: Any) -> None:
    sent = sum(a.sent.values())
    answered = sum(a.answered.values())
    expected = sum(a.expected.values())
    failed = sum(a.failed.values())
    lost = sum(a.lost.values())
    print()
    print(
        f"soak: {m['elapsed']:.0f}s, offered {args.rate:g} req/s, at most {args.concurrency} "
        f"in flight; router exit status {m['rc']}"
    )
    print(f"sent      {sent:>7}  " + ", ".join(f"{k} {v}" for k, v in sorted(a.sent.items())))
    print(f"answered  {answered:>7}  (2xx, complete answers)")
    print(f"bad       {expected:>7}  (bad requests sent on purpose, answered 400 as they should)")
    print(f"failed    {failed:>7}")
    for cause, n in a.failed.most_common():
        print(f"            {n:>7}  {cause}")
    print(f"lost      {lost:>7}  (sent, never answered nor refused)")
    for cause, n in a.lost.most_common():
        print(f"            {n:>7}  {cause}")
    print()
    print(f"{'phase':<42} {'sent':>7} {'answered':>9} {'bad':>7} {'failed':>7} {'lost':>5}")
    for phase, c in a.by_phase.items():
        print(
            f"{phase:<42} {c['sent']:>7} {c['answered']:>9} {c['expected']:>7} "
            f"{c['failed']:>7} {c['lost']:>5}"
        )
    print()
    stalled = sum(v for k, v in slow.items() if k.startswith("stalled body"))
    print(
        f"router zeta_router_requests_total: {m['counted']:.0f} "
        f"(chat/completion requests sent: {a.routed + stalled} = {a.routed} by the workload "
        f"+ {stalled} stalled bodies)"
    )
    print(
        f"router: tier failures {m['tier_failures']:.0f}, config files rejected "
        f"{m['config_errors']:.0f}, config generation {m['generation']:.0f}, connections "
        f"refused {m['refused']:.0f}, client timeouts "
        + ", ".join(f"{k} {v:.0f}" for k, v in m["timeouts"].items())
    )
    print("slow clients: " + (", ".join(f"{k} {v}" for k, v in sorted(slow.items())) or "none"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s offered")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="one minute (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.minutes = 1.0
    workdir = Path(tempfile.mkdtemp(prefix="zeta-faults-"))
    print(f"work directory (logs): {workdir}")
    import uvloop

    uvloop.run(soak(args, workdir))


if __name__ == "__main__":
    main()
