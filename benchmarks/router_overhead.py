"""How much does the router add? The same client load sent straight to a minimal upstream and
through the router, in one run.

    .venv/bin/python benchmarks/router_overhead.py [--quick] [--event-loop asyncio]

The upstream (tests/support/fake_upstream.py) answers a chat completion immediately. The router
runs as its real command line (standalone mode, two tiers on that upstream). When the machine
has two or more CPUs the router is pinned to CPU 0 and the upstream and the load generators to
the others, so "through one router process on one core" is literal and the load generator does
not compete with the router.

Figures printed:
- closed loop at concurrency 1 and 64 (each client sends its next request when the previous
  one is answered): requests/s, p50 and p99 latency;
- paced at concurrency 64: up to 64 requests in flight at a fixed offered rate below
  saturation, so that latency is the router's cost and not queueing behind a saturated core;
- wrk (if installed) at concurrency 64: the throughput with a load generator written in C;
- the router process's CPU time per request under each load (from /proc): on a machine shared
  with other work the req/s depend on what else runs, while the CPU a request costs the router
  does much less, and 1 s divided by it bounds what one core can do;
- the router's RSS after the load, and its own zeta_router_overhead_seconds mean.
With --external the requests go to an external tier (the same upstream, playing the provider:
the API key header, the client-side limits and the usage count on every request).
Never fails on timings: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.fake_upstream import start_fake_upstream  # noqa: E402
from zeta_router_dev.cluster.processes import cpu_seconds  # noqa: E402
from zeta_router_dev.local.router_proc import start_router  # noqa: E402

BODY = {
    "model": "zeta",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}


# -- load generator (runs in its own process) ---------------------------------------------------


async def _load(url: str, concurrency: int, requests: int, rate: float | None) -> dict[str, float]:
    import aiohttp

    payload = json.dumps(BODY).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        # Warm up the connections so that their setup is not measured.
        for _ in range(2):
            await asyncio.gather(
                *(_one(session, url, payload, headers) for _ in range(concurrency))
            )
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                if rate:
                    due = start + i / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                t = time.perf_counter()
                ok = await _one(session, url, payload, headers)
                latencies.append(time.perf_counter() - t)
                errors += not ok

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "errors": errors,
        "rps": n / elapsed,
        "p50_ms": latencies[n // 2] * 1000,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000,
    }


async def _one(session: object, url: str, payload: bytes, headers: dict[str, str]) -> bool:
    async with session.post(url, data=payload, headers=headers) as resp:  # type: ignore[attr-defined]
        await resp.read()
        return bool(resp.status == 200)


def _loadgen_main(argv: list[str]) -> None:
    url, concurrency, requests, rate = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    import uvloop

    result = uvloop.run(_load(url, concurrency, requests, rate or None))
    print(json.dumps(result))


# -- orchestration ------------------------------------------------------------------------------


def _pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of a running process (threads it starts later inherit it)."""
    if not cpus:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


def _pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn pinning a child before it starts any thread."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _run_loadgen(
    url: str, concurrency: int, requests: int, rate: float, cpus: set[int] | None
) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--loadgen", url, str(concurrency), str(requests), str(rate)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_pinned(cpus),
    )
    out, _ = proc.communicate(timeout=600)
    result: dict[str, float] = json.loads(out)
    return result


def _wrk(url: str, seconds: int, cpus: set[int] | None) -> dict[str, float] | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        body = json.dumps(json.dumps(BODY))
        f.write(
            'wrk.method = "POST"\n'
            f"wrk.body = {body}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        script = f.name
    try:
        proc = subprocess.Popen(
            [wrk, "-t1", "-c64", f"-d{seconds}s", "--latency", "-s", script, url],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=_pinned(cpus),
        )
        out, _ = proc.communicate(timeout=seconds + 30)
    finally:
        os.unlink(script)

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _external_routing(workdir: Path, url: str) -> Path:
    """A routing file whose every request goes to an external tier on ``url`` (the flat
    scorer gives 0.5, above the cut point), with limits far above the load, so that each
    request pays for the key header, the limits' window and the usage count."""
    from support.routing_files import FLAT_SCORER

    key = workdir / "api-key"  # as the operator has it: a file the router polls every second
    key.write_text("sk-benchmark\n")
    cfg = {
        "router": "zeta",
        "tiers": [
            {"name": "small", "url": url, "engine": "llamacpp"},
            {
                "name": "hosted",
                "url": url,
                "servedModelName": "provider-model",
                "engine": "external",
                "external": {
                    "apiKeyFile": str(key),
                    "requestsPerMinute": 10_000_000,
                    "tokensPerMinute": 1_000_000_000,
                    "promptCostPer1kTokens": 0.5,
                    "completionCostPer1kTokens": 1.5,
                },
            },
        ],
        "contexts": [{"name": "default", "thresholds": [0.4]}],
        "defaultContext": "default",
        "scorer": FLAT_SCORER,
    }
    path = workdir / "routing.yaml"
    path.write_text(json.dumps(cfg))  # (JSON is YAML)
    return path


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        _loadgen_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--event-loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--paced-rate", type=float, default=500.0, help="req/s offered, paced")
    parser.add_argument(
        "--external",
        action="store_true",
        help="route every request to an external tier (API key header, client-side limits, "
        "usage counted from the answers) instead of a tier the cluster runs",
    )
    args = parser.parse_args()
    n1, n64, seconds = (300, 3000, 3) if args.quick else (1000, 10000, 5)

    cpus = sorted(os.sched_getaffinity(0))
    router_cpus = {cpus[0]} if len(cpus) >= 2 else None
    other_cpus = set(cpus[1:]) if len(cpus) >= 2 else None
    workdir = Path(tempfile.mkdtemp(prefix="zeta-bench-"))
    upstream = start_fake_upstream(workdir / "upstream.log")
    _pin(upstream.process.pid, other_cpus)
    try:
        tiers = ["--tier", f"small={upstream.url}", "--tier", f"large={upstream.url}"]
        if args.external:
            tiers = ["--config", str(_external_routing(workdir, upstream.url))]
            upstream.control(usage={"prompt_tokens": 12, "completion_tokens": 8})
        router = start_router(
            [*tiers, *("--log-level", "warning", "--event-loop", args.event_loop)], workdir
        )
    except BaseException:
        upstream.stop()
        raise
    _pin(router.process.pid, router_cpus)
    targets = {
        "direct": upstream.url + "/v1/chat/completions",
        "router": router.base_url + "/chat/completions",
    }
    rows: list[tuple[str, str, dict[str, float]]] = []
    pids = {"direct": upstream.process.pid, "router": router.process.pid}

    def measured(name: str, load: Callable[[], dict[str, float] | None]) -> dict[str, float] | None:
        before = cpu_seconds(pids[name])
        res = load()
        if res is not None:
            n = res.get("requests") or res["rps"] * seconds
            res["cpu_us"] = (cpu_seconds(pids[name]) - before) / max(n, 1) * 1e6
        return res

    try:
        for name, url in targets.items():
            for load, run in (
                ("c=1", lambda u=url: _run_loadgen(u, 1, n1, 0, other_cpus)),
                ("c=64", lambda u=url: _run_loadgen(u, 64, n64, 0, other_cpus)),
                (
                    f"c=64 @{args.paced_rate:g}/s",
                    lambda u=url: _run_loadgen(
                        u, 64, int(args.paced_rate * seconds), args.paced_rate, other_cpus
                    ),
                ),
                ("wrk c=64", lambda u=url: _wrk(u, seconds, other_cpus)),
            ):
                res = measured(name, run)
                if res is not None:
                    rows.append((name, load, res))
        rss, hwm = _rss_mb(router.process.pid)
        with urllib.request.urlopen(router.admin_url + "/metrics") as r:
            text = r.read().decode()
        total = float(re.search(r"^zeta_router_overhead_seconds_sum ([\d.e+-]+)", text, re.M)[1])  # type: ignore[index]
        count = float(re.search(r"^zeta_router_overhead_seconds_count ([\d.e+-]+)", text, re.M)[1])  # type: ignore[index]
    finally:
        router.stop(signal.SIGTERM)
        upstream.stop()

    if args.external:
        print("every request served by an external tier (key, limits, usage counted)")
    print(
        f"router pinned to CPU {sorted(router_cpus or [])}, upstream and load generators to "
        f"{sorted(other_cpus or [])}; event loop: {args.event_loop}; "
        f"load: aiohttp+uvloop client in its own process, and wrk where installed"
    )
    print(
        f"{'target':<8} {'load':<16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'CPU us/req':>11} {'1 core max':>11}"
    )
    for name, load, res in rows:
        print(
            f"{name:<8} {load:<16} {res['rps']:>9.0f} {res['p50_ms']:>8.2f} "
            f"{res['p99_ms']:>8.2f} {int(res['errors']):>7} {res['cpu_us']:>11.0f} "
            f"{1e6 / max(res['cpu_us'], 1):>9.0f}/s"
        )
    by = {(n, load): r for n, load, r in rows}
    print("added by the router (router - direct):")
    for load in ("c=1", "c=64", f"c=64 @{args.paced_rate:g}/s", "wrk c=64"):
        if ("router", load) in by:
            d, r = by[("direct", load)], by[("router", load)]
            print(
                f"  {load:<16} p50 {r['p50_ms'] - d['p50_ms']:+.2f} ms, "
                f"p99 {r['p99_ms'] - d['p99_ms']:+.2f} ms"
            )
    print(f"router RSS after the load: {rss:.1f} MB (peak {hwm:.1f} MB)")
    print(f"machine load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"router's own time per request (zeta_router_overhead_seconds mean): "
        f"{total / max(count, 1) * 1e6:.0f} us over {int(count)} requests"
    )


if __name__ == "__main__":
    main()
