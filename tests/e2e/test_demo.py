"""`zeta-router demo --headless` end to end: the whole stack on this machine (with the kubelet
stand-in, and on a real node), a short workload, the summary and PNG written, and nothing it
started left running; on the real node, the machine as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.fixtures_node import NodeSession
from zeta_router_dev.cluster import lock
from zeta_router_dev.cluster.hostchanges import host_snapshot
from zeta_router_dev.cluster.nodeconfig import RUN_DIR
from zeta_router_dev.cluster.processes import pid_alive

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.cluster,
    pytest.mark.prometheus,
    pytest.mark.llama,
    pytest.mark.slow,
]

DURATION = 30
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Running processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry.name)):
            found.append((int(entry.name), cmdline))
    return found


def run_demo(tmp_path: Path, node: str) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    output = tmp_path / "output"
    workdir = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    result = subprocess.run(
        [
            sys.executable, "-m", "zeta_router", "demo", "--headless",
            "--duration", str(DURATION), "--concurrency", "3",
            "--output", str(output), "--workdir", str(workdir),
            "--no-install", "--node", node,
        ],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return result, output, workdir


def check_summary(result: subprocess.CompletedProcess[str], output: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((output / "summary.json").read_text())
    by_tier = summary["requests"]["by_tier"]
    assert by_tier["small"] > 0, summary["requests"]
    assert by_tier["large"] > 0, summary["requests"]
    assert summary["requests"]["answered"] == sum(by_tier.values())
    # Both contexts were sent and the routers told which one they used.
    assert set(summary["requests"]["by_context"]) == {"ZetaHRM", "ZetaTRM"}
    assert summary["latency_s"]["all"]["p50"] > 0
    # The cluster was observed: thresholds from the routing ConfigMap, replicas per tier.
    assert set(summary["thresholds"]["start"]) >= {"ZetaHRM", "ZetaTRM"}
    assert summary["replicas"]["max"]["small"] >= 1
    assert summary["replicas"]["max"]["large"] >= 1
    assert summary["conditions"].get("Ready") == "True"
    assert (output / "demo.png").read_bytes()[:8] == PNG_MAGIC
    text = (output / "summary.txt").read_text()
    assert "per tier" in text
    assert f"node: {summary['node']}" in text
    assert "per tier" in result.stdout  # printed at the end as well
    assert len((output / "requests.jsonl").read_text().splitlines()) == summary["requests"]["total"]
    return summary


def test_headless_demo_reaches_both_tiers_writes_the_summary_and_cleans_up(
    tmp_path: Path,
) -> None:
    result, output, workdir = run_demo(tmp_path, "standin")
    summary = check_summary(result, output)
    assert summary["node"].startswith("stand-in")
    started = {p["name"]: p["pid"] for p in summary["processes"]}
    expected = {"etcd", "kube-apiserver", "kube-controller-manager", "kubelet", "operator"}
    expected |= {"prometheus", "llama-small", "llama-large", "router-small", "router-large"}
    assert set(started) == expected
    left = {name: pid for name, pid in started.items() if pid_alive(pid)}
    assert left == {}
    assert processes_mentioning(str(workdir)) == []


@pytest.mark.node
@pytest.mark.node_exclusive
def test_headless_demo_on_the_real_node_runs_the_tiers_as_pods_and_restores_the_machine(
    node_session: NodeSession, node_tmp: Path
) -> None:
    node_session.release()  # the machine's one real node is the demo's now
    before = host_snapshot([node_tmp / "work" / "node", RUN_DIR])
    result, output, workdir = run_demo(node_tmp, "real")
    summary = check_summary(result, output)
    assert summary["node"].startswith("real")
    started = {p["name"]: p["pid"] for p in summary["processes"]}
    expected = {"etcd", "kube-apiserver", "kube-controller-manager", "prometheus"}
    expected |= {"containerd", "kubelet", "kube-proxy", "kube-scheduler", "cluster-dns"}
    if not lock.held_by_ancestor():  # else `flock LOCK make test` holds it for everyone below
        expected.add("lock")
    assert set(started) == expected
    assert {name: pid for name, pid in started.items() if pid_alive(pid)} == {}
    assert processes_mentioning(str(workdir)) == []
    after = host_snapshot([node_tmp / "work" / "node", RUN_DIR])
    assert json.loads(json.dumps(after, sort_keys=True)) == json.loads(
        json.dumps(before, sort_keys=True)
    )
