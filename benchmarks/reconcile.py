"""How fast the operator turns ZetaRouters into their children, and how much memory it needs.

Against ``$KUBECONFIG`` when set, else a local control plane started for the run. Prints:

- per-router latency from the create request to the moment every child (Deployments,
  Services, ConfigMap) exists, median and p90 over 20 routers created one after another;
- the total time to reconcile 100 ZetaRouters created at once;
- the operator's resident memory after that.

Aims: p50 < 1 s, 100 routers < 60 s, RSS < 150 MB. Prints figures; never fails on them.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.cluster import (  # noqa: E402
    apply,
    load_yaml_docs,
    unique_name,
    wait_for,
)
from zeta_router.kube import ApiError, Kube, api_path  # noqa: E402
from zeta_router_dev.local.operator_proc import OperatorProcess  # noqa: E402

SAMPLE = REPO / "manifests" / "samples" / "zetarouter-7b-14b.yaml"
KINDS = (("apps/v1", "deployments"), ("v1", "services"), ("v1", "configmaps"))


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


def make_namespace(kube: Kube, prefix: str) -> str:
    name = unique_name(prefix)
    kube.create(api_path("v1", "namespaces"), {"metadata": {"name": name}})
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=20, help="routers timed one by one")
    parser.add_argument("--burst", type=int, default=100, help="routers created at once")
    args = parser.parse_args()

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

        ns_seq = make_namespace(kube, "bench-seq")
        ns_burst = make_namespace(kube, "bench-burst")
        operator = OperatorProcess(
            kubeconfig=kubeconfig,
            namespaces=[ns_seq, ns_burst],
            log_path=workdir / "operator.log",
            drift_interval=30.0,
            extra_args=["--log-format=json"],
        ).start()
        assert operator.proc is not None
        time.sleep(1.0)  # let the operator's watches settle
        rss_idle = rss_mb(operator.proc.pid)

        def body(name: str) -> dict[str, Any]:
            doc = copy.deepcopy(template)
            doc["metadata"] = {"name": name}
            return doc

        zr_seq = api_path("zeta.ai/v1alpha1", "zetarouters", ns_seq)
        seen = Seen(kube, ns_seq)
        watchers.append(seen)
        latencies = []
        for i in range(args.sequential):
            name = f"r{i}"
            started = time.monotonic()
            kube.create(zr_seq, body(name))
            done = wait_for(lambda n=name: seen.all_seen(expected(n, tiers)), 60, name, 0.01)
            latencies.append(done - started)

        zr_burst = api_path("zeta.ai/v1alpha1", "zetarouters", ns_burst)
        seen_burst = Seen(kube, ns_burst)
        watchers.append(seen_burst)
        wanted: set[str] = set()
        started = time.monotonic()
        for i in range(args.burst):
            kube.create(zr_burst, body(f"b{i}"))
            wanted |= expected(f"b{i}", tiers)
        created = time.monotonic() - started
        done = wait_for(lambda: seen_burst.all_seen(wanted), 600, "all burst children", 0.05)
        total = done - started
        rss_after = rss_mb(operator.proc.pid)

        ordered = sorted(latencies)
        p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
        print(f"apply -> all children, {len(latencies)} routers one by one:")
        print(f"  p50 {statistics.median(latencies) * 1000:.0f} ms   p90 {p90 * 1000:.0f} ms   "
              f"max {max(latencies) * 1000:.0f} ms   (aim: p50 < 1000 ms)")  # fmt: skip
        print(f"{args.burst} routers created at once ({created:.1f} s to send the creates):")
        print(f"  all {len(wanted)} children present after {total:.1f} s   (aim: < 60 s)")
        print(f"operator RSS: {rss_idle:.0f} MB idle, {rss_after:.0f} MB after "
              f"{args.sequential + args.burst} routers   (aim: < 150 MB)")  # fmt: skip
        ok = True
        return 0
    finally:
        for watcher in watchers:
            watcher.stop.set()
        if operator is not None:
            operator.stop()
        if plane is not None:
            plane.down()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
