"""`zeta-router cluster up` after a start that was interrupted before the apiserver had a port:
the state file holds an empty server, and `up` must wipe it and start anew (its docstring's
promise), not crash on the empty URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeta_router_dev.cluster import controlplane, pki
from zeta_router_dev.cluster.controlplane import STATE_FILE, ClusterState, LocalControlPlane


def _interrupted_start(state_dir: Path) -> None:
    """What `up` leaves when stopped between writing its keys and starting the apiserver."""
    state_dir.mkdir()
    keys = pki.generate(state_dir / "pki", [])
    ClusterState(
        state_dir=state_dir,
        kubeconfig=state_dir / "kubeconfig",
        server="",
        ca_cert=keys.ca_cert,
        admin_token=keys.admin_token,
    ).save()


def test_status_of_an_interrupted_start(tmp_path: Path) -> None:
    _interrupted_start(tmp_path / "cluster")
    status = LocalControlPlane(tmp_path / "cluster").status()
    assert status.exists
    assert not status.running
    assert "interrupted" in status.ready_detail


class _StopError(Exception):
    pass


def test_up_wipes_an_interrupted_start_and_starts_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "cluster"
    _interrupted_start(state_dir)
    seen: list[bool] = []

    def find_binaries() -> None:
        # Where `up` goes on to start the components: the old state must be gone by now.
        seen.append((state_dir / STATE_FILE).exists())
        raise _StopError

    monkeypatch.setattr(controlplane, "find_binaries", find_binaries)
    with pytest.raises(_StopError):
        LocalControlPlane(state_dir).up(timeout=5)
    assert seen == [False]
