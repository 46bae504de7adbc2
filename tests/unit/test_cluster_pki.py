"""Keys, certificates and tokens of the local control plane; its state file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from zeta_router_dev.cluster import pki
from zeta_router_dev.cluster.controlplane import ClusterState, LocalControlPlane
from zeta_router_dev.cluster.processes import ProcessRecord


def test_generate(tmp_path: Path) -> None:
    keys = pki.generate(tmp_path / "pki")
    text = subprocess.run(
        ["openssl", "x509", "-in", str(keys.serving_cert), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "IP Address:127.0.0.1" in text
    assert "DNS:kubernetes.default.svc" in text
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(keys.ca_cert), str(keys.serving_cert)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    tokens = keys.tokens_csv.read_text().splitlines()
    assert tokens[0].startswith(f"{keys.admin_token},")
    assert keys.admin_token != keys.controller_manager_token
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (tmp_path / "pki").iterdir())


def test_state_round_trip_and_status_without_processes(tmp_path: Path) -> None:
    st = ClusterState(
        state_dir=tmp_path,
        kubeconfig=tmp_path / "kubeconfig",
        server="https://127.0.0.1:1",
        ca_cert=tmp_path / "ca.crt",
        admin_token="t",
        ports={"apiserver": 1},
        processes={"etcd": ProcessRecord("etcd", 999_999_999, None, "log", ["etcd"])},
    )
    st.save()
    loaded = ClusterState.load(tmp_path)
    assert loaded == st
    status = LocalControlPlane(tmp_path).status()
    assert status.exists
    assert not status.running
    assert [c.alive for c in status.components] == [False]
    assert LocalControlPlane(tmp_path).down() == []
    assert not tmp_path.exists()
