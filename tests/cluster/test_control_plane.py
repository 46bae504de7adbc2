"""`zeta-router cluster up|status|down`: a second, independent control plane from its own state
directory, driven through the command line as a user would."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from zeta_router.kube import Kube, api_path
from zeta_router_dev.cluster.controlplane import ClusterState

pytestmark = pytest.mark.cluster


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "zeta_router", "cluster", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


def test_up_status_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "plane"
    assert cli("status", "--state-dir", str(state_dir)).returncode == 3

    up = cli("up", "--state-dir", str(state_dir), "--quiet", "--no-kubelet")
    assert up.returncode == 0, up.stderr
    kubeconfig = state_dir / "kubeconfig"
    assert up.stdout.strip() == f"export KUBECONFIG={kubeconfig}"
    try:
        state = ClusterState.load(state_dir)
        assert state is not None
        assert set(state.processes) == {"etcd", "kube-apiserver", "kube-controller-manager"}
        assert state.server.startswith("https://127.0.0.1:")
        assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"

        kube = Kube.from_kubeconfig(kubeconfig)
        assert kube.get("/version")["gitVersion"] == "v1.20.2"
        ns = kube.get(api_path("v1", "namespaces", None, "default"))
        assert ns["status"]["phase"] == "Active"
        # Authentication is on: an unknown token is refused.
        ctx = ssl.create_default_context(cafile=str(state.ca_cert))
        req = urllib.request.Request(
            f"{state.server}/api/v1/namespaces", headers={"Authorization": "Bearer wrong"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, context=ctx, timeout=10)
        assert err.value.code == 401

        status = cli("status", "--state-dir", str(state_dir))
        assert status.returncode == 0, status.stdout
        assert "ready (ok)" in status.stdout

        # Idempotent: a second `up` reuses the running plane.
        again = cli("up", "--state-dir", str(state_dir), "--quiet", "--no-kubelet")
        assert again.returncode == 0
        reused = ClusterState.load(state_dir)
        assert reused is not None
        assert reused.processes["kube-apiserver"].pid == state.processes["kube-apiserver"].pid
    finally:
        down = cli("down", "--state-dir", str(state_dir))
    assert down.returncode == 0
    assert "kube-apiserver" in down.stdout
    for rec in state.processes.values():
        assert not rec.alive(), rec.name
    assert not state_dir.exists()
