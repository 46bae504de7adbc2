"""How fast the operator turns ZetaRouters into their children, what it asks of the apiserver
for each, and how much memory it needs.

Against ``$KUBECONFIG`` when set, else a local control plane started for the run. Prints:

- API requests per ZetaRouter by verb and resource, from the apiserver's own counters
  (``apiserver_request_total`` on its ``/metrics``, read before and after): for the create
  (until the children exist and the status is written, then a short settle), for an idle hour
  (``--idle-intervals`` drift intervals measured, scaled to 3,600 s), and for a threshold change;
- per-router latency from the create request to the moment every child (Deployments,
  Services, ConfigMap) exists, median and p90 over routers created one after another;
- the time to reconcile ``--burst`` ZetaRouters created at once (children present and status
  written for every one), the rate, and the operator's resident memory after that (with a list,
  such as ``--burst 100,300,1000``, one burst after the other, the earlier ones still served;
  each burst in one namespace of its own, or spread over ``--namespaces N``), what every client
  asked of the apiserver during the burst (the operator, Kubernetes' own controllers, the
  benchmark), per ZetaRouter, and the operator's reconciliations by trigger and result;
- the load average with each figure (the machine may be shared).

The apiserver counts every client's requests: only the resources the operator works with are
tabled (``OPERATOR_RESOURCES``; the kube-controller-manager's Deployment updates are left out by
verb), the benchmark's own creates, patches and polls are subtracted, and the operator's Events
are counted from the Events themselves. Watches are per operator, not per ZetaRouter, and are not
counted; nor are the LISTs kopf makes when a watch restarts (per operator too, but they fall in
the measured windows). Also not the operator's, and not per ZetaRouter: "GET services" in the
idle hour (the apiserver's own look at the ``kubernetes`` Service, several a minute). Kubernetes
1.20's apiserver reports many GETs of one object as LISTs (kubernetes/kubernetes#95556): read
"LIST" as "GET or LIST" (the operator never lists ZetaRouters itself; "LIST zetarouters" are its
GETs).

Aims: 1,000 at once reconciled in < 180 s, the rate not falling with the burst size, RSS < 300 MB.
Prints figures; never fails on them.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.cluster import (  # noqa: E402
    apply,
    load_yaml_docs,
    unique_name,
    wait_for,
)
from zeta_router.controller.config import OperatorConfig  # noqa: E402
from zeta_router.kube import MERGE_PATCH, ApiError, Kube, api_path  # noqa: E402
from zeta_router_dev.cluster.processes import cpu_seconds  # noqa: E402
from zeta_router_dev.local.operator_proc import OperatorProcess  # noqa: E402

SAMPLE = REPO / "manifests" / "samples" / "zetarouter-7b-14b.yaml"
KINDS = (("apps/v1", "deployments"), ("v1", "services"), ("v1", "configmaps"))
ZR_API = "zeta.ai/v1alpha1"

Key = tuple[str, str]  # (verb, resource[/subresource])
# What the operator asks for. The apiserver counts every client: the kube-controller-manager's
# requests (ReplicaSets, Pods, Endpoints, Deployment status and revision annotations, its own
# Events and housekeeping) fall outside these or are left out by verb; the benchmark's own
# requests are subtracted where it makes them.
OPERATOR_RESOURCES = {
    "zetarouters", "zetarouters/status", "deployments", "services", "configmaps", "secrets",
    "networkpolicies", "poddisruptionbudgets", "kopfpeerings",
}  # fmt: skip
NOT_THE_OPERATOR: set[Key] = {("UPDATE", "deployments")}
PROFILER = "zeta_router_dev.local.memprofile"


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    return str(Path.home() / ".cache" / "zeta-router" / "tools" / "bin" / "kubectl")


def request_counts(kubeconfig: Path) -> Counter[Key]:
    """``apiserver_request_total`` summed by verb and resource[/subresource] (WATCH excluded)."""
    text = subprocess.run(
        [kubectl(), f"--kubeconfig={kubeconfig}", "get", "--raw", "/metrics"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    out: Counter[Key] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for s in family.samples:
            if not s.name.endswith("_total"):
                continue
            verb = s.labels.get("verb", "")
            res = s.labels.get("resource", "")
            sub = s.labels.get("subresource", "")
            if verb in ("WATCH", "WATCHLIST", "CONNECT"):
                continue
            out[(verb, f"{res}/{sub}" if sub else res)] += int(s.value)
    return out


def operator_events(kube: Kube, namespace: str) -> int:
    """Events the operator posted in ``namespace`` (each counted once, aggregated or not)."""
    items = kube.list(api_path("v1", "events", namespace)).get("items") or []
    return sum(
        1
        for e in items
        if "zeta-router" in str((e.get("source") or {}).get("component") or "")
        or "zeta-router" in str(e.get("reportingComponent") or "")
    )


class Window:
    """Requests made between :meth:`start` and :meth:`stop`, attributed to the operator."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.before: Counter[Key] = Counter()

    def start(self) -> None:
        self.before = request_counts(self.kubeconfig)

    def stop(self, ours: Counter[Key] | None = None) -> Counter[Key]:
        after = request_counts(self.kubeconfig)
        diff: Counter[Key] = Counter()
        for key, n in after.items():
            d = n - self.before.get(key, 0) - (ours or Counter()).get(key, 0)
            if d > 0 and key not in NOT_THE_OPERATOR and key[1] in OPERATOR_RESOURCES:
                diff[key] = d
        return diff


class Seen:
    """First time each child name was seen, from watches on the namespace."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.times: dict[str, float] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ready = threading.Barrier(len(KINDS) + 1)
        for api_version, plural in KINDS:
            threading.Thread(target=self._watch, args=(api_version, plural), daemon=True).start()
        self.ready.wait()

    def _watch(self, api_version: str, plural: str) -> None:
        path = api_path(api_version, plural, self.namespace)
        listing = self.kube.list(path)
        rv = listing["metadata"]["resourceVersion"]
        self.ready.wait()
        while not self.stop.is_set():
            try:
                for kind, obj in self.kube.watch(path, rv, timeout_seconds=60):
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if kind == "ADDED":
                        with self.lock:
                            self.times.setdefault(
                                f"{plural}/{obj['metadata']['name']}", time.monotonic()
                            )
            except ApiError:
                rv = self.kube.list(path)["metadata"]["resourceVersion"]
            except Exception:
                if self.stop.is_set():
                    return  # the cluster is going away
                time.sleep(0.5)

    def all_seen(self, names: set[str]) -> float | None:
        with self.lock:
            if names <= self.times.keys():
                return max(self.times[n] for n in names)
        return None


def expected(name: str, tiers: list[str]) -> set[str]:
    return (
        {f"deployments/{name}-{t}" for t in tiers}
        | {f"services/{name}"}
        | {f"services/{name}-{t}" for t in tiers}
        | {f"configmaps/{name}-routing"}
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loadavg() -> str:
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def all_children_seen(seen: dict[str, Seen], wanted: dict[str, set[str]]) -> float | None:
    """When the last of ``wanted`` (names by namespace) was first seen; None while some are not."""
    times = [seen[ns].all_seen(names) for ns, names in wanted.items()]
    return None if None in times else max(t for t in times if t is not None)


def make_namespace(kube: Kube, prefix: str) -> str:
    name = unique_name(prefix)
    kube.create(api_path("v1", "namespaces"), {"metadata": {"name": name}})
    return name


POLLS: Counter[Key] = Counter()
"""The benchmark's own LISTs, subtracted from the operator's."""


def statuses_written(kube: Kube, namespace: str, names: set[str]) -> bool:
    """Every ZetaRouter in ``names`` has a status for its generation."""
    POLLS[("LIST", "zetarouters")] += 1
    items = kube.list(api_path(ZR_API, "zetarouters", namespace)).get("items") or []
    done = {
        z["metadata"]["name"]
        for z in items
        if (z.get("status") or {}).get("observedGeneration") == z["metadata"].get("generation")
    }
    return names <= done


def print_all_clients(before: Counter[Key], after: Counter[Key], n: int, top: int = 14) -> None:
    """What the apiserver served during a burst, every client's (the operator's, Kubernetes'
    own controllers', the benchmark's), per ZetaRouter: where the shared CPU goes."""
    diff = after - before  # only the counts that grew
    total = sum(diff.values())
    print(f"  every client's requests during the burst: {total / n:.1f} per ZetaRouter; the most:")
    for (verb, resource), count in diff.most_common(top):
        print(f"    {verb:<7} {resource:<28} {count / n:6.2f}")


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user and system) each process has used so far, by name."""
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = cpu_seconds(pid)
        except OSError:
            continue  # gone, or not on this machine
    return out


def reconciles(operator: OperatorProcess) -> str:
    """``zeta_operator_reconciles_total`` by trigger and result, from the operator's metrics."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(operator.metrics()):
        if family.name != "zeta_operator_reconciles":
            continue
        for s in family.samples:
            if s.name.endswith("_total") and s.value:
                counts[f"{s.labels.get('trigger')}/{s.labels.get('result')}"] += int(s.value)
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def print_table(title: str, per: dict[str, Counter[Key]], n: int) -> None:
    """One row per (verb, resource), one column per phase, requests per ZetaRouter."""
    keys = sorted({k for c in per.values() for k in c}, key=lambda k: (k[1], k[0]))
    print(f"{title} (per ZetaRouter, mean over {n}):")
    cols = list(per)
    print("  | verb | resource | " + " | ".join(cols) + " |")
    print("  |---|---|" + "---:|" * len(cols))
    for verb, res in keys:
        cells = [f"{per[c].get((verb, res), 0) / n:.2f}" for c in cols]
        print(f"  | {verb} | {res} | " + " | ".join(cells) + " |")
    totals = [f"**{sum(per[c].values()) / n:.2f}**" for c in cols]
    print("  | | **total** | " + " | ".join(totals) + " |")


def profile_report(pid: int, folder: Path) -> None:
    """Ask the profiled operator for a memory report and wait for it (a minute at most)."""
    before = set(folder.glob("memory-*.txt"))
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = set(folder.glob("memory-*.txt")) - before
        if new:
            time.sleep(1.0)  # written in one go, but let it finish
            print(f"  memory report: {new.pop()}")
            return
        time.sleep(0.5)
    print("  memory report: none after 60 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=20, help="routers timed one by one")
    parser.add_argument(
        "--burst",
        default="100",
        help="routers created at once; a comma-separated list: one burst after the other, "
        "each in a namespace of its own, the earlier ones still served",
    )
    parser.add_argument(
        "--namespaces",
        type=int,
        default=1,
        help="spread each burst over this many namespaces of its own, round robin (a fleet of "
        "teams; Kubernetes' own controllers scan a namespace's objects at each sync)",
    )
    parser.add_argument("--count", type=int, default=10, help="routers whose requests are counted")
    parser.add_argument("--drift-interval", type=float, default=30.0)
    parser.add_argument("--idle-intervals", type=int, default=2, help="drift intervals measured")
    parser.add_argument(
        "--workers",
        type=int,
        default=OperatorConfig.workers,
        help="the operator's --workers (default: its own, %(default)s)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="write a memory report of the operator into this folder after each burst "
        "(zeta_router_dev.local.memprofile)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="with --profile: run the operator under tracemalloc (slower, and more RSS)",
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the operator's log and the control plane's files (kept anyway on a failure)",
    )
    args = parser.parse_args()
    if args.namespaces < 1:
        parser.error("--namespaces must be at least 1")
    # Stopped by SIGTERM (or Ctrl-C), it still stops the operator and the control plane.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    workdir = Path(tempfile.mkdtemp(prefix="zeta-bench-"))
    plane = None
    kubeconfig_env = os.environ.get("KUBECONFIG")
    if kubeconfig_env:
        kubeconfig = Path(kubeconfig_env.split(os.pathsep)[0])
    else:
        from zeta_router_dev.cluster.controlplane import LocalControlPlane

        plane = LocalControlPlane(workdir / "control-plane")
        kubeconfig = plane.up().kubeconfig
    operator: OperatorProcess | None = None
    watchers: list[Seen] = []
    ok = False
    try:
        kube = Kube.from_kubeconfig(kubeconfig)
        (crd,) = load_yaml_docs(REPO / "crds" / "zetarouter.yaml")
        apply(kube, crd)
        crd_path = api_path(
            "apiextensions.k8s.io/v1", "customresourcedefinitions", None, crd["metadata"]["name"]
        )
        wait_for(
            lambda: any(
                c["type"] == "Established" and c["status"] == "True"
                for c in (kube.get(crd_path).get("status") or {}).get("conditions") or []
            ),
            60,
            "the CRD",
        )
        (template,) = [d for d in load_yaml_docs(SAMPLE) if d.get("kind") == "ZetaRouter"]
        tiers = [t["name"] for t in template["spec"]["tiers"]]

        ns_count = make_namespace(kube, "bench-count")
        ns_seq = make_namespace(kube, "bench-seq")
        bursts = [int(b) for b in args.burst.split(",") if b]
        burst_namespaces = [
            [make_namespace(kube, f"bench-burst{size}") for _ in range(args.namespaces)]
            for size in bursts
        ]
        tracing = ["-X", "tracemalloc=1"] if args.tracemalloc else []
        operator = OperatorProcess(
            kubeconfig=kubeconfig,
            namespaces=[ns_count, ns_seq, *(ns for group in burst_namespaces for ns in group)],
            log_path=workdir / "operator.log",
            drift_interval=args.drift_interval,
            extra_args=["--log-format=json", f"--workers={args.workers}"],
            launcher=(
                [*tracing, "-m", PROFILER, str(args.profile)]
                if args.profile
                else ["-m", "zeta_router"]
            ),
        ).start()
        assert operator.proc is not None
        time.sleep(1.0)  # let the operator's watches settle
        rss_idle = rss_mb(operator.proc.pid)
        # Whose CPU a burst takes (the local control plane's processes, when started here).
        pids = {"operator": operator.proc.pid, "benchmark": os.getpid()}
        if plane is not None and (state := plane.state()) is not None:
            pids |= {name: rec.pid for name, rec in state.processes.items()}

        def body(name: str) -> dict[str, Any]:
            doc = copy.deepcopy(template)
            doc["metadata"] = {"name": name}
            return doc

        # ---- requests per ZetaRouter ----------------------------------------------------------
        n = args.count
        counted = {f"c{i}" for i in range(n)}
        zr_count = api_path(ZR_API, "zetarouters", ns_count)
        seen_count = Seen(kube, ns_count)
        watchers.append(seen_count)
        window = Window(kubeconfig)
        per: dict[str, Counter[Key]] = {}
        settle = 5.0

        POLLS.clear()
        window.start()
        counted_at = time.monotonic()
        for name in sorted(counted):
            kube.create(zr_count, body(name))
        want = set().union(*(expected(name, tiers) for name in counted))
        wait_for(lambda: seen_count.all_seen(want), 300, "the counted routers' children", 0.05)
        wait_for(lambda: statuses_written(kube, ns_count, counted), 300, "their status", 0.5)
        time.sleep(settle)
        # Ours: the creates, the status polls (a LIST of zetarouters each) are not counted as
        # the operator's; one LIST per poll is an upper bound we cannot separate: polls stop
        # before the settle, so subtract what we made.
        per["create"] = window.stop(Counter({("POST", "zetarouters"): n}) + POLLS)
        events_after_create = operator_events(kube, ns_count)
        per["create"][("POST", "events (operator's)")] = events_after_create

        idle = args.idle_intervals * args.drift_interval
        # Steady state: every counted router past its first drift check (each falls somewhere
        # in its second interval).
        time.sleep(max(0.0, counted_at + 2 * args.drift_interval - time.monotonic()))
        window.start()
        idle_from = time.monotonic()
        time.sleep(idle)
        raw_idle = window.stop()
        # Scaled by the window as it was (reading the counters takes a while on a busy machine).
        scale = 3600.0 / (time.monotonic() - idle_from)
        per["idle hour"] = Counter({k: round(v * scale) for k, v in raw_idle.items()})
        ev = operator_events(kube, ns_count)
        if ev > events_after_create:
            per["idle hour"][("POST", "events (operator's)")] = round(
                (ev - events_after_create) * scale
            )

        POLLS.clear()
        window.start()
        patches = 0
        for name in sorted(counted):
            kube.patch(
                api_path(ZR_API, "zetarouters", ns_count, name),
                {
                    "spec": {
                        "router": {
                            "contexts": [
                                {"name": "ZetaHRM", "thresholds": [0.45]},
                                {"name": "ZetaTRM", "thresholds": [0.6]},
                                {"name": "default", "thresholds": [0.5]},
                            ]
                        }
                    }
                },
                MERGE_PATCH,
            )
            patches += 1

        def config_changed() -> bool:
            POLLS[("LIST", "configmaps")] += 1
            items = kube.list(api_path("v1", "configmaps", ns_count)).get("items") or []
            changed = [c for c in items if "0.45" in str(c.get("data") or {})]
            return len(changed) >= n

        wait_for(config_changed, 300, "the routing ConfigMaps to change", 0.5)
        wait_for(lambda: statuses_written(kube, ns_count, counted), 300, "their status", 0.5)
        time.sleep(settle)
        per["threshold change"] = window.stop(Counter({("PATCH", "zetarouters"): patches}) + POLLS)
        ev2 = operator_events(kube, ns_count)
        per["threshold change"][("POST", "events (operator's)")] = ev2 - ev
        print_table(
            f"API requests (drift interval {args.drift_interval:.0f} s; idle: "
            f"{args.idle_intervals} intervals x {3600 / idle:.0f})",
            per,
            n,
        )

        # ---- latency one by one ---------------------------------------------------------------
        zr_seq = api_path(ZR_API, "zetarouters", ns_seq)
        seen = Seen(kube, ns_seq)
        watchers.append(seen)
        latencies = []
        for i in range(args.sequential):
            name = f"r{i}"
            started = time.monotonic()
            kube.create(zr_seq, body(name))
            done = wait_for(lambda n=name: seen.all_seen(expected(n, tiers)), 60, name, 0.01)
            latencies.append(done - started)
        ordered = sorted(latencies)
        p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
        print(f"apply -> all children, {len(latencies)} routers one by one ({loadavg()}):")
        print(f"  p50 {statistics.median(latencies) * 1000:.0f} ms   p90 {p90 * 1000:.0f} ms   "
              f"max {max(latencies) * 1000:.0f} ms   (aim: p50 < 1000 ms)")  # fmt: skip

        # ---- bursts ---------------------------------------------------------------------------
        total_routers = n + args.sequential
        for size, group in zip(bursts, burst_namespaces, strict=True):
            seen = {ns: Seen(kube, ns) for ns in group}
            watchers.extend(seen.values())
            wanted: dict[str, set[str]] = {ns: set() for ns in group}
            burst_names: dict[str, set[str]] = {ns: set() for ns in group}
            load_before = loadavg()
            all_before = request_counts(kubeconfig)
            cpu_before = cpu_by_process(pids)
            started = time.monotonic()
            for i in range(size):
                ns = group[i % len(group)]
                kube.create(api_path(ZR_API, "zetarouters", ns), body(f"b{i}"))
                wanted[ns] |= expected(f"b{i}", tiers)
                burst_names[ns].add(f"b{i}")
            created = time.monotonic() - started
            children_at = wait_for(
                lambda s=seen, w=wanted: all_children_seen(s, w), 900, "all burst children", 0.1
            )
            wait_for(
                lambda b=burst_names: all(statuses_written(kube, ns, n) for ns, n in b.items()),
                900,
                "all burst statuses",
                2.0,
            )
            total = time.monotonic() - started
            total_routers += size
            where = f" over {len(group)} namespaces" if len(group) > 1 else ""
            print(f"{size} routers created at once{where} ({created:.1f} s to send the creates; "
                  f"{load_before} before, {loadavg()} after):")  # fmt: skip
            children = sum(len(w) for w in wanted.values())
            print(f"  all {children} children present after {children_at - started:.1f} s; "
                  f"every status written after {total:.1f} s: {size / total:.1f} "
                  "ZetaRouters/s   (aim for 1,000: < 180 s)")  # fmt: skip
            print_all_clients(all_before, request_counts(kubeconfig), size)
            print(f"  the operator's reconciliations so far: {reconciles(operator)}")
            used = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_by_process(pids).items()}
            print("  CPU during the burst, share of one core: " + ", ".join(
                f"{k} {100 * v / total:.0f} %" for k, v in used.items()))  # fmt: skip
            rss = rss_mb(operator.proc.pid)
            if args.profile:
                profile_report(operator.proc.pid, args.profile)
            print(f"  operator RSS: {rss_idle:.0f} MB idle at start, {rss:.0f} MB with "
                  f"{total_routers} routers   (aim: < 300 MB)")  # fmt: skip
            sys.stdout.flush()
        ok = True
        return 0
    finally:
        for watcher in watchers:
            watcher.stop.set()
        if operator is not None:
            operator.stop()
        if plane is not None:
            plane.down()
        log = workdir / "operator.log"
        if log.exists():
            orphaned = log.read_text(errors="replace").count("Leaving it orphaned")
            print(f"operator log: {orphaned} 'Leaving it orphaned' at shutdown")
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
