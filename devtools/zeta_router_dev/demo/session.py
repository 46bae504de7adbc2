"""One run of the demo: start the stack (with progress), drive the workload under the live
view (or headless progress lines), write the summary, and stop everything."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live

from zeta_router_dev.demo import view
from zeta_router_dev.demo.observe import Sampler
from zeta_router_dev.demo.prompts import mixed_workload
from zeta_router_dev.demo.realstack import RealNodeStack, describe
from zeta_router_dev.demo.resource import NAME, NAMESPACE, TIERS
from zeta_router_dev.demo.stack import DemoStack, Interrupted, StackError
from zeta_router_dev.demo.stats import aggregate, recent
from zeta_router_dev.demo.summary import build_summary, format_text, write_outputs
from zeta_router_dev.demo.workload import Workload

if TYPE_CHECKING:
    from zeta_router_dev.demo.cli import StopRequest

RECENT_WINDOW = 10.0
HEADLESS_EVERY = 5.0


class DemoRun:
    def __init__(
        self, args: argparse.Namespace, workdir: Path, stop: StopRequest, err: Console
    ) -> None:
        self.args = args
        self.workdir = workdir
        self.stop = stop
        self.err = err
        self.stack: DemoStack | RealNodeStack
        if getattr(args, "node", "standin") == "real":
            self.stack = RealNodeStack(workdir, interrupted=stop)
        else:
            self.stack = DemoStack(workdir, interrupted=stop)
        self.workload: Workload | None = None
        self.sampler: Sampler | None = None
        self.live = not args.headless and err.is_terminal

    # ---- phases -----------------------------------------------------------------------------

    def run(self) -> int:
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        try:
            self._start_stack()
        except Interrupted:
            self.err.print("interrupted while starting; nothing was sent")
            return 130
        except StackError as e:
            self.err.print(f"[red]error:[/] {e}")
            self.err.print(self.stack.log_hint())
            return 1
        startup = time.monotonic() - t0
        self.err.print(f"[green]ready[/] in {startup:.1f} s; sending the workload")
        interrupted = self._drive()
        records = self.workload.records() if self.workload else []
        samples = self.sampler.samples() if self.sampler else []
        meta: dict[str, Any] = {
            "router": NAME,
            "namespace": NAMESPACE,
            "started_at": started_at.isoformat(timespec="seconds"),
            "startup_s": round(startup, 2),
            "startup_steps_s": {k: round(v, 2) for k, v in self.stack.steps.items()},
            "duration_s": round(self.workload.now() if self.workload else 0.0, 2),
            "concurrency": self.args.concurrency,
            "max_tokens": self.args.max_tokens,
            "interrupted": interrupted,
            "node": describe(self.stack),
            "processes": [{"name": p.name, "pid": p.pid} for p in self.stack.processes()],
            "workdir": str(self.workdir),
        }
        summary = build_summary(records, samples, TIERS, meta=meta)
        write_outputs(self.args.output, summary, records, samples, TIERS)
        # Plain text: decisions and errors may contain brackets, which rich would take for markup.
        sys.stdout.write(format_text(summary))
        sys.stdout.flush()
        if self.args.keep_running and not self.stop():
            self._keep_running()
        if summary["requests"]["answered"] == 0:
            self.err.print("[red]error:[/] no request was answered; " + self.stack.log_hint())
            return 1
        return 0

    def teardown(self) -> list[str]:
        """Stop the workload and every process; never raises (the terminal may be gone)."""
        if self.workload is not None:
            self.workload.stop(timeout=2.0)
        if self.sampler is not None:
            self.sampler.stop()
        with contextlib.suppress(OSError):
            self.err.print("stopping everything the demo started...")
        return self.stack.stop()

    # ---- helpers ----------------------------------------------------------------------------

    def _start_stack(self) -> None:
        if not self.live:

            def on_plain(step: str, took: float | None) -> None:
                if took is None:
                    self.err.print(f"-- starting {step}")
                else:
                    self.err.print(f"   {step}: {took:.1f} s")

            self.stack.start(on_plain)
            return
        with self.err.status("starting...") as status:

            def on_step(step: str, took: float | None) -> None:
                if took is None:
                    status.update(f"starting {step}...")
                else:
                    self.err.print(f"[green]✓[/] {step} [dim]({took:.1f} s)[/]")

            self.stack.start(on_step)

    def _endpoints(self) -> dict[str, str]:
        return self.stack.endpoints()

    def _state(self, note: str = "") -> view.ViewState:
        assert self.workload is not None
        assert self.sampler is not None
        records = self.workload.records()
        now = self.workload.now()
        return view.ViewState(
            elapsed=now,
            duration=self.args.duration or None,
            tiers=TIERS,
            total=aggregate(records, TIERS),
            recent=aggregate(recent(records, now, RECENT_WINDOW), TIERS),
            recent_window=RECENT_WINDOW,
            sample=self.sampler.latest(),
            title=f"zeta-router demo: ZetaRouter {NAMESPACE}/{NAME}",
            endpoints=self._endpoints(),
            in_flight=self.workload.in_flight(),
            note=note or "Ctrl-C: stop, write the summary, stop every process",
        )

    def _drive(self) -> bool:
        """Run the workload until the duration is over or a stop is requested; True when
        stopped early."""
        assert self.stack.kube is not None
        self.workload = Workload(
            self.stack.router_urls,
            model=NAME,
            requests=mixed_workload(self.args.seed),
            concurrency=self.args.concurrency,
            max_tokens=self.args.max_tokens,
            new_connections=self.stack.new_connections,
        )
        from zeta_router.kube import Kube

        assert self.stack.kubeconfig is not None
        self.sampler = Sampler(
            Kube.from_kubeconfig(self.stack.kubeconfig),
            NAMESPACE,
            NAME,
            TIERS,
            clock=self.workload.now,
        )
        self.workload.start()
        self.sampler.start()
        duration = self.args.duration

        def done() -> bool:
            assert self.workload is not None
            return self.stop() or (duration > 0 and self.workload.now() >= duration)

        if self.live:
            with Live(
                get_renderable=lambda: view.render(self._state()),
                console=self.err,
                refresh_per_second=2,
                transient=False,
            ):
                while not done():
                    time.sleep(0.2)
        else:
            next_line = HEADLESS_EVERY
            while not done():
                time.sleep(0.2)
                if self.workload.now() >= next_line:
                    self.err.print(view.headless_line(self._state()))
                    next_line += HEADLESS_EVERY
        self.workload.stop(timeout=2.0)
        return self.stop()

    def _keep_running(self) -> None:
        self.err.print("workload finished; everything keeps running until Ctrl-C:")
        for name, url in self._endpoints().items():
            self.err.print(f"  {name}: {url}")
        self.err.print(f"  model name for clients: {NAME} (or {NAME}/<context>)")
        if self.live:
            with Live(
                get_renderable=lambda: view.render(
                    self._state("workload finished; the stack keeps running. Ctrl-C: stop")
                ),
                console=self.err,
                refresh_per_second=1,
            ):
                while not self.stop():
                    time.sleep(0.2)
        else:
            self.stop.event.wait()
