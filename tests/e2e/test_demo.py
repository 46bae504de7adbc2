"""`zeta-router demo --headless` end to end: the whole stack on this machine, a short workload,
the summary and PNG written, and nothing it started left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zeta_router_dev.demo.stack import pid_alive

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


def test_headless_demo_reaches_both_tiers_writes_the_summary_and_cleans_up(
    tmp_path: Path,
) -> None:
    output = tmp_path / "output"
    workdir = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "zeta_router",
            "demo",
            "--headless",
            "--duration",
            str(DURATION),
            "--concurrency",
            "3",
            "--output",
            str(output),
            "--workdir",
            str(workdir),
            "--no-install",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    summary = json.loads((output / "summary.json").read_text())
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
    assert "per tier" in result.stdout  # printed at the end as well
    assert len((output / "requests.jsonl").read_text().splitlines()) == summary["requests"]["total"]

    started = {p["name"]: p["pid"] for p in summary["processes"]}
    expected = {"etcd", "kube-apiserver", "kube-controller-manager", "kubelet", "operator"}
    expected |= {"prometheus", "llama-small", "llama-large", "router-small", "router-large"}
    assert set(started) == expected
    left = {name: pid for name, pid in started.items() if pid_alive(pid)}
    assert left == {}
    assert processes_mentioning(str(workdir)) == []
