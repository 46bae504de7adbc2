"""How well are a tier's replicas used? Real llama.cpp servers (xllamacpp, SmolLM2-135M, prompt
caching on as llama.cpp does by default) as replicas of one tier behind the router, the same
workload sent with each way of picking a replica, in one run.

    .venv/bin/python benchmarks/replica_balancing.py [--quick] [--replicas 2] [--json PATH]

Workloads:
- **shared**: multi-turn conversations (each turn carries the earlier ones, with the answers the
  model gave) whose system prompts are long and shared by several conversations, at a
  concurrency above the replicas' slots (the machine is saturated);
- **unique**: single requests with no prefix in common (what affinity cannot help), for
  throughput;
- **slowed**: the shared workload with one replica slowed to about 40 % of its CPU (SIGSTOP and
  SIGCONT at 10 Hz, a real server running slower), to see its share of requests fall.

Strategies compared (the router's ``--balancing``): ``random`` (a random replica per request,
what a Service gives), ``round-robin``, and ``prefix`` (ours: prompt prefix affinity by
consistent hashing with bounded loads, the replicas' own load gauges, least loaded; loads
weighted by each replica's measured speed). Every run uses fresh prompts (a salt), so no run
profits from the caches of another.

The servers are started once and serve every strategy: llama.cpp's prompt cache is on (each
slot keeps its last prompt, and :data:`CACHE_RAM_MIB` of host memory keeps earlier ones, about
2,900 tokens of SmolLM2-135M at 22.5 KiB a token), ``--cache-reuse`` off and a slot is chosen
by prompt similarity (0.1), llama.cpp's defaults. Affinity saves prompt tokens only where one
replica's cache cannot hold every live prefix: with the default workload (3 system prompts)
both replicas soon hold all of them whatever the picks. ``--system-prompts 12
--system-words 300 --conversations 24 --turns 2 --concurrency 8`` (a *many* workload) has more
live prompts (~400 tokens each) than one replica's cache holds (some 9: two slots and ~7 in
host memory), and half as many per replica when they meet by prefix: the case of many
conversations on few replicas. ``--replicas 4 --system-prompts 12 --system-words 300
--conversations 24 --turns 4 --max-tokens 64 --concurrency 8`` makes the conversations longer,
with answers nearer a chat's: each later turn carries more history, which a random pick computes
again whenever the turn lands on another replica. With ``--conversations 72 --system-prompts
36`` a workload has 288 requests, so that its p99 is not just its slowest request.

Figures: TTFT p50/p99 (first streamed event), requests/s, prompt tokens sent and prompt tokens
the servers computed (llama.cpp's ``llamacpp:prompt_tokens_total``: tokens not served from its
prompt cache), and each replica's share of the requests. Never fails on timings: it prints
figures. On a shared, loaded machine the absolute numbers vary from run to run; the comparison
within one run is what counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from zeta_router_dev.images.llama_server import CACHE_RAM_MIB  # noqa: E402
from zeta_router_dev.local.llama import LlamaServer, start_llama_server  # noqa: E402
from zeta_router_dev.local.router_proc import RouterProcess, start_router  # noqa: E402

STRATEGIES = ("random", "round-robin", "prefix")
TOPICS = ("astronomy", "cooking", "gardening", "chess", "sailing", "music", "geology", "poetry")


def system_prompt(salt: str, i: int, words: int) -> str:
    rnd = random.Random(f"{salt}-{i}")
    topic = TOPICS[i % len(TOPICS)]
    body = " ".join(rnd.choice(TOPICS) for _ in range(words))
    return f"[{salt}/{i}] You are an assistant for questions about {topic}. Context: {body}."


@dataclass
class Result:
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    errors: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    seconds: float = 0.0


async def _stream(session: Any, url: str, body: dict[str, Any], res: Result) -> str:
    """One streamed request; its answer text ("" on error)."""
    t0 = time.perf_counter()
    first: float | None = None
    text: list[str] = []
    try:
        async with session.post(url, json=body) as resp:
            if resp.status != 200:
                res.errors += 1
                await resp.read()
                return ""
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                if first is None:
                    first = time.perf_counter() - t0
                event = json.loads(line[6:])
                for choice in event.get("choices") or []:
                    text.append((choice.get("delta") or {}).get("content") or "")
                usage = event.get("usage")
                if usage:
                    res.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                    details = usage.get("prompt_tokens_details") or {}
                    res.cached_tokens += int(details.get("cached_tokens") or 0)
    except (TimeoutError, OSError, ValueError):
        res.errors += 1
        return ""
    res.ttft.append(first if first is not None else time.perf_counter() - t0)
    res.latency.append(time.perf_counter() - t0)
    return "".join(text)


async def _run(
    url: str,
    jobs: list[list[dict[str, Any]]],
    concurrency: int,
    res: Result,
    model: str = "zeta",
    headers: dict[str, str] | None = None,
) -> None:
    """``jobs``: conversations (lists of user turns with their system prompt); each runs turn
    after turn, carrying the answers; ``concurrency`` conversations at once."""
    import aiohttp

    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for j in jobs:
        queue.put_nowait(j)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:

        async def worker() -> None:
            while not queue.empty():
                turns = queue.get_nowait()
                messages: list[dict[str, Any]] = []
                for turn in turns:
                    messages.extend(turn["messages"])
                    body = {
                        "model": model,
                        "messages": messages,
                        "max_tokens": turn["max_tokens"],
                        "temperature": 0,
                        "stream": True,
                        "stream_options": {"include_usage": True},
                    }
                    answer = await _stream(session, url, body, res)
                    messages = [*messages, {"role": "assistant", "content": answer or "ok"}]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        res.seconds = time.perf_counter() - t0


def shared_jobs(salt: str, args: argparse.Namespace) -> list[list[dict[str, Any]]]:
    rnd = random.Random(salt)
    prompts = [system_prompt(salt, i, args.system_words) for i in range(args.system_prompts)]
    jobs = []
    for c in range(args.conversations):
        turns = []
        for t in range(args.turns):
            topic = rnd.choice(TOPICS)
            question = f"Question {t + 1} of conversation {c}: tell me one fact about {topic}."
            msgs = [{"role": "user", "content": question}]
            if t == 0:
                msgs.insert(0, {"role": "system", "content": prompts[c % len(prompts)]})
            turns.append({"messages": msgs, "max_tokens": args.max_tokens})
        jobs.append(turns)
    return jobs


def unique_jobs(salt: str, args: argparse.Namespace) -> list[list[dict[str, Any]]]:
    rnd = random.Random(salt)
    jobs = []
    for c in range(args.conversations * args.turns):
        words = " ".join(rnd.choice(TOPICS) for _ in range(args.system_words // 4))
        content = f"[{salt}/{c}] {words}. Name one of these."
        jobs.append([{"messages": [{"role": "user", "content": content}], "max_tokens": 8}])
    return jobs


def _counter(server: LlamaServer, name: str) -> float:
    return server.metrics().get(name, 0.0)


def _replica_requests(router: RouterProcess) -> dict[str, float]:
    with urllib.request.urlopen(router.admin_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("zeta_router_replica_requests_total{"):
            labels, _, value = line.rpartition(" ")
            replica = labels.split('replica="', 1)[1].split('"', 1)[0]
            out[replica] = out.get(replica, 0.0) + float(value)
    return out


@contextlib.contextmanager
def slowed(server: LlamaServer, share: float = 0.4) -> Iterator[None]:
    """Let ``server`` run ``share`` of the time (SIGSTOP/SIGCONT at 10 Hz), by PID."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            os.kill(server.pid, signal.SIGSTOP)
            time.sleep(0.1 * (1 - share))
            os.kill(server.pid, signal.SIGCONT)
            time.sleep(0.1 * share)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        os.kill(server.pid, signal.SIGCONT)


def quantile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def result_row(
    workload: str, strategy: str, res: Result, computed: float, shares: list[float]
) -> dict[str, Any]:
    """One row of figures: ``computed`` prompt tokens the servers computed, ``shares`` of the
    requests per replica (any unit: normalised here)."""
    total = sum(shares) or 1.0
    n = len(res.latency)
    return {
        "workload": workload,
        "strategy": strategy,
        "requests": n,
        "errors": res.errors,
        "ttft_p50_ms": quantile(res.ttft, 0.5) * 1000,
        "ttft_p99_ms": quantile(res.ttft, 0.99) * 1000,
        "latency_p50_ms": quantile(res.latency, 0.5) * 1000,
        "rps": n / res.seconds if res.seconds else 0.0,
        "prompt_tokens": res.prompt_tokens,
        "computed_tokens": int(computed),
        "shares": [round(x / total, 3) for x in shares],
    }


def header(strategy_width: int) -> str:
    return (
        f"{'workload':9} {'strategy':{strategy_width}} {'req':>4} {'err':>3} {'TTFT p50':>9} "
        f"{'TTFT p99':>9} {'req/s':>6} {'prompt tok':>10} {'computed':>9}  shares"
    )


def format_row(row: dict[str, Any], strategy_width: int) -> str:
    return (
        f"{row['workload']:9} {row['strategy']:{strategy_width}} {row['requests']:>4} "
        f"{row['errors']:>3} {row['ttft_p50_ms']:>7.0f}ms {row['ttft_p99_ms']:>7.0f}ms "
        f"{row['rps']:>6.2f} {row['prompt_tokens']:>10} {row['computed_tokens']:>9}"
        f"  {row['shares']}"
    )


def run_one(
    servers: list[LlamaServer],
    strategy: str,
    workload: str,
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    salt = f"{workload}-{strategy}-{time.monotonic_ns()}"
    jobs = shared_jobs(salt, args) if workload != "unique" else unique_jobs(salt, args)
    urls = ",".join(s.url for s in servers)
    # "prefix:loadFactor=1.5,prefixChars=4096": a strategy with balancing options.
    name, _, options = strategy.partition(":")
    extra = [a for o in options.split(",") if o for a in ("--balancing-option", o)]
    router = start_router(
        ["--tier", f"small={urls}", "--balancing", name, "--log-level", "warning", *extra], work
    )
    try:
        computed0 = sum(_counter(s, "llamacpp:prompt_tokens_total") for s in servers)
        res = Result()
        target = router.url + "/v1/chat/completions"
        if workload == "slowed":
            with slowed(servers[-1]):
                asyncio.run(_run(target, jobs, args.concurrency, res))
        else:
            asyncio.run(_run(target, jobs, args.concurrency, res))
        computed = sum(_counter(s, "llamacpp:prompt_tokens_total") for s in servers) - computed0
        shares = _replica_requests(router)
    finally:
        router.stop()
    return result_row(workload, strategy, res, computed, [shares.get(s.url, 0.0) for s in servers])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller workload (a smoke run)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--system-prompts", type=int, default=3)
    parser.add_argument("--system-words", type=int, default=120, help="words per system prompt")
    parser.add_argument("--concurrency", type=int, default=6, help="conversations at once")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per llama.cpp server")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--workloads", default="shared,unique,slowed", help="comma-separated subset"
    )
    parser.add_argument(
        "--strategies",
        default=" ".join(STRATEGIES),
        help="space-separated strategies to compare, each optionally with balancing options: "
        "'random round-robin prefix prefix:prefixChars=4096,loadFactor=1.5'",
    )
    args = parser.parse_args()
    if args.quick:
        args.conversations, args.turns, args.concurrency = 4, 2, 4
    workloads = [w for w in args.workloads.split(",") if w]
    work = Path(tempfile.mkdtemp(prefix="zeta-balancing-"))
    servers: list[LlamaServer] = []
    rows: list[dict[str, Any]] = []
    try:
        for i in range(args.replicas):
            servers.append(
                start_llama_server(f"r{i}", threads=args.threads, ctx_size=8192, log_dir=work)
            )
        print(
            f"{args.replicas} llama.cpp replicas (threads {args.threads}, 2 slots each, prompt "
            f"cache on: slots plus {CACHE_RAM_MIB} MiB of host memory, --cache-reuse 0, slot "
            "prompt similarity 0.1, the same for every strategy); "
            f"{args.conversations} conversations x {args.turns} turns, {args.system_prompts} "
            f"shared system prompts of {args.system_words} words, {args.concurrency} at once; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        print(header(24), flush=True)
        for workload in workloads:
            chosen = args.strategies.split()
            strategies = chosen if workload != "slowed" else [chosen[0], chosen[-1]]
            for strategy in strategies:
                row = run_one(servers, strategy, workload, args, work)
                rows.append(row)
                print(format_row(row, 24), flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        for s in servers:
            s.stop()
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
