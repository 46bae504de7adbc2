"""Which HTTP stack for the router? A bare pass-through proxy (no routing logic) built on each
candidate, measured with the same load against the same minimal upstream.

    .venv/bin/python benchmarks/http_stack.py [--seconds 3] [--rounds 2]

Candidates (all installable from PyPI and already dependencies of the project):
- aiohttp server + aiohttp client, on uvloop and on asyncio's own loop;
- aiohttp server + httpx client (httpx is the client the openai SDK uses), on uvloop.
The proxy runs pinned to CPU 0, the upstream and wrk (or, without wrk, the Python load
generator of router_overhead.py) to the other CPUs. Prints requests/s and latency per candidate
and round; never fails on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import router_overhead as ro  # noqa: E402
from support.fake_upstream import start_fake_upstream  # noqa: E402

CANDIDATES = ("aiohttp+uvloop", "aiohttp+asyncio", "aiohttp-server+httpx-client")


async def _proxy(kind: str, upstream: str) -> None:
    import aiohttp
    from aiohttp import web

    if kind.endswith("httpx-client"):
        import httpx

        hclient = httpx.AsyncClient(limits=httpx.Limits(max_connections=1024))

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            r = await hclient.post(
                upstream + request.path, content=body, headers={"Content-Type": "application/json"}
            )
            return web.Response(
                status=r.status_code, body=r.content, content_type="application/json"
            )

    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024))

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            async with session.post(
                upstream + request.path, data=body, headers={"Content-Type": "application/json"}
            ) as r:
                data = await r.read()
                return web.Response(status=r.status, body=data, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    print(json.dumps({"port": port}), flush=True)
    await asyncio.Event().wait()


def _serve_main(kind: str, upstream: str) -> None:
    if kind.startswith("aiohttp+asyncio"):
        asyncio.run(_proxy(kind, upstream))
    else:
        import uvloop

        uvloop.run(_proxy(kind, upstream))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _serve_main(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    proxy_cpus = {cpus[0]} if len(cpus) >= 2 else None
    other = set(cpus[1:]) if len(cpus) >= 2 else None
    workdir = Path(tempfile.mkdtemp(prefix="zeta-stack-"))
    upstream = start_fake_upstream(workdir / "upstream.log")
    ro._pin(upstream.process.pid, other)
    print(f"{'candidate':<30} {'round':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    try:
        for rnd in range(args.rounds):
            for kind in CANDIDATES:
                proc = subprocess.Popen(
                    [sys.executable, __file__, "--serve", kind, upstream.url],
                    stdout=subprocess.PIPE,
                    text=True,
                    preexec_fn=ro._pinned(proxy_cpus),
                )
                assert proc.stdout is not None
                port = json.loads(proc.stdout.readline())["port"]
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                time.sleep(0.2)
                res = ro._wrk(url, args.seconds, other)
                if res is None:
                    res = ro._run_loadgen(url, 64, 3000, 0, other)
                proc.terminate()
                proc.wait(10)
                print(
                    f"{kind:<30} {rnd + 1:>5} {res['rps']:>8.0f} {res['p50_ms']:>8.2f} "
                    f"{res['p99_ms']:>8.2f}"
                )
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
