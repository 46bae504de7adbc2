#!/usr/bin/env python3
"""``llama-server`` of the CPU model-server image (``zeta-router-llamacpp``): llama.cpp's HTTP
server from the ``xllamacpp`` wheel, started with the command-line arguments of llama.cpp's own
``llama-server``, so that a tier with ``engine: llamacpp`` runs this image exactly as it runs
``ghcr.io/ggml-org/llama.cpp:server`` (the operator renders only arguments, no command).

Accepted: the arguments the operator renders (``--model``, ``--alias``, ``--host``, ``--port``,
``--metrics``) and those users commonly add in ``spec.tiers[].args`` (``--ctx-size``,
``--threads``, ``--threads-batch``, ``--parallel``, ``--batch-size``, ``--ubatch-size``,
``--n-gpu-layers``, which is ignored on a CPU, ``--no-warmup``, ``--cont-batching``), and
``--api-key`` (or ``LLAMA_API_KEY``: it then plays a hosted provider that checks keys).
Anything else is refused with llama-server's usage, exit status 2. ``--hf-repo`` cannot work in this
image (it serves files in the image or on a volume, and has no network access to download).

This file runs inside the image: it imports only the standard library and ``xllamacpp``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_PORT = 8080
#: llama.cpp's host-memory prompt cache (``--cache-ram``): prompts of finished requests kept for
#: later ones that begin alike (llama.cpp's default is 8 GiB; an image shares a node).
CACHE_RAM_MIB = 64


@dataclass(frozen=True)
class Options:
    model: str
    alias: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    metrics: bool = False
    ctx_size: int = 4096
    threads: int = 1
    threads_batch: int | None = None
    parallel: int = 2
    batch_size: int | None = None
    ubatch_size: int | None = None
    warmup: bool = True
    print_port: bool = False
    api_keys: tuple[str, ...] = ()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llama-server",
        description="llama.cpp's OpenAI-compatible server (xllamacpp) for a GGUF model; "
        "arguments as llama.cpp's llama-server.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help="path of the GGUF model file")
    src.add_argument(
        "-hf", "--hf-repo", dest="hf_repo", help="not supported here: serve a file (--model)"
    )
    p.add_argument("-a", "--alias", help="model name the server reports and accepts")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on (0: any)")
    p.add_argument("--metrics", action="store_true", help="Prometheus metrics on /metrics")
    p.add_argument("-c", "--ctx-size", type=int, default=4096, help="context shared by slots")
    p.add_argument("-t", "--threads", type=int, default=1, help="CPU threads for generation")
    p.add_argument("-tb", "--threads-batch", type=int, default=None, help="threads for prompts")
    p.add_argument("-np", "--parallel", type=int, default=2, help="request slots")
    p.add_argument("-b", "--batch-size", type=int, default=None, help="logical batch size")
    p.add_argument("-ub", "--ubatch-size", type=int, default=None, help="physical batch size")
    p.add_argument(
        "-ngl", "--n-gpu-layers", "--gpu-layers", dest="gpu_layers", default=None,
        help="layers on the GPU: accepted, ignored (this image has no GPU support)",
    )  # fmt: skip
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up run")
    p.add_argument(
        "--api-key",
        default=os.environ.get("LLAMA_API_KEY"),
        help="API keys (comma-separated) a request must bring as Authorization: Bearer; "
        "default: $LLAMA_API_KEY, else none asked",
    )
    p.add_argument(
        "-cb", "--cont-batching", action="store_true", help="continuous batching (always on)"
    )
    # For the local process helper: print {"port": N} on stdout once listening.
    p.add_argument("--print-port", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_args(argv: Sequence[str]) -> Options:
    """The options of a command line; exits with status 2 and a message on a bad one."""
    p = parser()
    ns = p.parse_args(list(argv))
    if ns.hf_repo:
        p.error(
            f"--hf-repo {ns.hf_repo}: this image serves model files and downloads nothing; "
            "give --model /models/<file>.gguf (a file in the image or on a mounted volume)"
        )
    for name in ("ctx_size", "threads", "parallel"):
        if getattr(ns, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= ns.port <= 65535:
        p.error(f"--port {ns.port} is not a TCP port")
    return Options(
        model=ns.model,
        alias=ns.alias,
        host=ns.host,
        port=ns.port,
        metrics=ns.metrics,
        ctx_size=ns.ctx_size,
        threads=ns.threads,
        threads_batch=ns.threads_batch,
        parallel=ns.parallel,
        batch_size=ns.batch_size,
        ubatch_size=ns.ubatch_size,
        warmup=not ns.no_warmup,
        print_port=ns.print_port,
        api_keys=tuple(k for k in (ns.api_key or "").split(",") if k),
    )


def build_params(opts: Options, xllamacpp: Any) -> Any:
    """xllamacpp's ``CommonParams`` for ``opts``."""
    params = xllamacpp.CommonParams()
    params.model.path = opts.model
    params.hostnames = [opts.host]
    params.port = opts.port
    params.cpuparams.n_threads = opts.threads
    params.cpuparams_batch.n_threads = opts.threads_batch or opts.threads
    params.n_threads_http = 4
    params.n_ctx = opts.ctx_size
    params.n_parallel = opts.parallel
    if opts.batch_size:
        params.n_batch = opts.batch_size
    if opts.ubatch_size:
        params.n_ubatch = opts.ubatch_size
    params.endpoint_metrics = opts.metrics
    if opts.alias:
        params.model_alias = {opts.alias}
    params.cache_ram_mib = CACHE_RAM_MIB
    params.warmup = opts.warmup
    if opts.api_keys:
        params.api_keys = list(opts.api_keys)
    return params


def serve(opts: Options) -> int:
    """Serve until SIGTERM or SIGINT (also as PID 1 of a container: the signals are blocked and
    waited for, so they are never ignored)."""
    if not os.path.isfile(opts.model):
        print(f"llama-server: model file {opts.model} not found", file=sys.stderr)
        return 1
    try:
        import xllamacpp
    except ImportError as e:
        # The wheel's native library links OpenMP, which a bare Debian lacks.
        fix = "install Debian's libgomp1 (make system-deps)" if "libgomp" in str(e) else ""
        print(f"llama-server: cannot load llama.cpp (xllamacpp): {e}; {fix}", file=sys.stderr)
        return 1

    # Block the stop signals before the server's threads start, so only sigwait sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    server = xllamacpp.Server(build_params(opts, xllamacpp))
    if opts.print_port:
        port = int(str(server.listening_address).rsplit(":", 1)[1])
        sys.stdout.write(json.dumps({"port": port}) + "\n")
        sys.stdout.flush()
        os.dup2(2, 1)  # nothing else may block on the parent's pipe
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    # The process is going away: skip the native destructors, the OS reclaims everything.
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    return serve(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
