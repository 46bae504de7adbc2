"""``zeta-router`` with its memory profiled: ``python [-X tracemalloc=N] -m
zeta_router_dev.local.memprofile DIR operator ...`` runs the operator (``zeta_router``'s own
command line after ``DIR``) and, on each SIGUSR2, writes ``DIR/memory-<k>.txt``: what tracemalloc
attributes to each line and each call stack (when tracing), the deep size of what the operator
and kopf keep (per holder), objects by type (from the garbage collector), the threads, and the
RSS before and after giving the C heap's free memory back (``malloc_trim``). Development only:
the operator never imports this.

``benchmarks/reconcile.py --profile DIR`` starts the operator this way and signals it after
each burst.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import itertools
import os
import signal
import sys
import threading
import tracemalloc
import types
from collections import Counter
from pathlib import Path
from types import FrameType

TOP = 40

_counter = itertools.count()


_SHARED = (type, types.ModuleType, types.FunctionType, types.CodeType)


def deep_size(root: object) -> int:
    """Bytes reachable from ``root``, each object once; classes, modules, functions, code and
    a module's globals (shared by everything) not followed."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SHARED):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj, 0)
        if isinstance(obj, types.FrameType):
            # Its locals, not its globals (a module's) nor its callers.
            stack.extend(obj.f_locals.values())
            continue
        if isinstance(obj, dict) and "__builtins__" in obj:
            continue  # a module's globals
        stack.extend(gc.get_referents(obj))
    return total


def _describe(item: object) -> str:
    """A queued item: a watch event's type and object kind, or the item's type."""
    if isinstance(item, dict) and isinstance(item.get("object"), dict):
        return f"{item.get('type')} {item['object'].get('kind')}"
    return type(item).__qualname__


def _holders(objects: list[object]) -> list[tuple[str, object]]:
    """What the operator keeps per ZetaRouter or per child, by who keeps it."""
    out: list[tuple[str, object]] = []
    for obj in objects:
        name = type(obj).__qualname__
        if name == "Reconciler":
            for attr, value in vars(obj).items():
                out.append((f"Reconciler.{attr}", value))
            out.append(("Reconciler.applier._applied", obj.applier._applied))  # type: ignore[attr-defined]
            out.append(("Reconciler.seen", obj.seen))  # type: ignore[attr-defined]
        elif name == "EventRecorder":
            out.append(("EventRecorder", obj))
        elif name == "ResourceMemories":
            items = obj._items  # type: ignore[attr-defined]
            out.append((f"kopf ResourceMemories ({len(items)} objects)", obj))
            bodies = [
                m.daemons_memory.live_fresh_body
                for m in items.values()
                if m.daemons_memory.live_fresh_body is not None
            ]
            out.append((f"  of which daemons' live bodies ({len(bodies)})", bodies))
            daemons = [m.daemons_memory.running_daemons for m in items.values()]
            out.append(("  of which running daemons' records", daemons))
    queues = [o for o in objects if isinstance(o, asyncio.Queue)]
    waiting = [list(q._queue) for q in queues]  # type: ignore[attr-defined]
    out.append((f"asyncio queues ({len(queues)}; {sum(map(len, waiting))} items waiting)", waiting))
    kinds = Counter(_describe(item) for items in waiting for item in items)
    for kind, n in kinds.most_common(5):
        these = [i for w in waiting for i in w if _describe(i) == kind]
        out.append((f"  {n} waiting: {kind}", these))
    tasks = [o for o in objects if isinstance(o, asyncio.Task)]
    out.append((f"asyncio tasks ({len(tasks)}), with their coroutines", tasks))
    return out


def _rss() -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return line.split(":", 1)[1].strip()
    return "?"


def report(out_dir: Path) -> Path:
    """Write one report (see the module) and return its path."""
    gc.collect()
    lines: list[str] = []
    rss = _rss()
    lines.append(f"RSS {rss}; threads {threading.active_count()}; stack size "
                 f"{threading.stack_size() or 'default'}")  # fmt: skip
    lines.append("threads by name prefix: " + str(Counter(
        t.name.rstrip("0123456789_-") for t in threading.enumerate()
    ).most_common()))  # fmt: skip
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        traced, peak = tracemalloc.get_traced_memory()
        lines.append(f"tracemalloc: {traced / 2**20:.1f} MiB traced, peak {peak / 2**20:.1f} MiB")
        for group in ("filename", "lineno"):
            lines.append(f"\n== top {TOP} by {group}")
            for stat in snap.statistics(group)[:TOP]:
                lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d}  {stat.traceback[0]}")
        if tracemalloc.get_traceback_limit() > 1:
            lines.append("\n== top 15 call stacks")
            for stat in snap.statistics("traceback")[:15]:
                lines.append(f"--- {stat.size / 2**20:.2f} MiB in {stat.count} blocks")
                lines += [f"    {frame}" for frame in stat.traceback.format()[-24:]]
    objects = gc.get_objects()
    counts = Counter(type(o).__qualname__ for o in objects)
    lines.append("\n== held by (deep size, each object counted once per holder)")
    for label, holder in _holders(objects):
        lines.append(f"{deep_size(holder) / 2**20:8.2f} MiB  {label}")
    lines.append(f"\n== gc objects by type (top {TOP})")
    lines += [f"{n:9d}  {name}" for name, n in counts.most_common(TOP)]
    # What the C heap holds free and could give back (glibc): the heap's high-water mark.
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
        lines.append(f"\nRSS after malloc_trim(0): {_rss()}")
    except OSError:
        pass
    path = out_dir / f"memory-{next(_counter)}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    del sys.argv[1]

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        # In a thread: a report takes seconds and must not stall the operator's event loop.
        threading.Thread(target=report, args=(out_dir,), name="memprofile").start()

    signal.signal(signal.SIGUSR2, on_signal)
    (out_dir / "pid").write_text(str(os.getpid()))
    from zeta_router.cli import main as zeta_main

    return zeta_main()


if __name__ == "__main__":
    raise SystemExit(main())
