"""What a real node changes on the machine is recorded and undone: the pure parts (iptables
rules, paths, the record) and folders returned to how they were."""

from __future__ import annotations

from pathlib import Path

from zeta_router_dev.cluster.hostchanges import (
    HostRecord,
    chains_of,
    jumps_to,
    leftovers,
    remove_new_entries,
    sysctl_path,
    tree,
    under,
)

RULES = [
    "-P POSTROUTING ACCEPT",
    "-N KUBE-SERVICES",
    "-N CNI-0123abcd",
    "-N DOCKER",
    '-A POSTROUTING -s 198.18.0.2/32 -m comment --comment "name: \\"zeta-pods\\" id: \\"x\\"" '
    "-j CNI-0123abcd",
    "-A OUTPUT -m comment --comment kubernetes -j KUBE-SERVICES",
    "-A POSTROUTING -j DOCKER",
]


def test_chains_and_jumps() -> None:
    assert chains_of(RULES) == ["CNI-0123abcd", "KUBE-SERVICES"]
    ours = {"CNI-0123abcd", "KUBE-SERVICES"}
    jumping = [r for r in RULES if r.startswith("-A ") and jumps_to(r, ours)]
    assert len(jumping) == 2
    assert not jumps_to("-A POSTROUTING -j DOCKER", ours)


def test_paths_and_sysctls() -> None:
    assert sysctl_path("net.ipv4.conf.all.route_localnet") == Path(
        "/proc/sys/net/ipv4/conf/all/route_localnet"
    )
    assert under("/state/node/kubelet/pods/x", ["/state/node"])
    assert under("/state/node", ["/state/node/"])
    assert not under("/state/node-other", ["/state/node"])


def test_folders_return_to_how_they_were(tmp_path: Path) -> None:
    existing = tmp_path / "var-log-pods"
    (existing / "old-pod").mkdir(parents=True)
    (existing / "old-pod" / "0.log").write_text("kept")
    before = tree(existing)
    (existing / "new-pod" / "c").mkdir(parents=True)
    (existing / "new-pod" / "c" / "0.log").write_text("ours")
    (existing / "old-pod" / "1.log").write_text("ours too")
    created = tmp_path / "run-containerd"
    file_created = tmp_path / "xtables.lock"
    assert tree(created) is None
    (created / "s").mkdir(parents=True)
    file_created.write_text("")
    said: list[str] = []
    remove_new_entries(str(existing), before, said.append)
    remove_new_entries(str(created), None, said.append)
    remove_new_entries(str(file_created), None, said.append)
    assert tree(existing) == before == ["old-pod", "old-pod/0.log"]
    assert (existing / "old-pod" / "0.log").read_text() == "kept"
    assert not created.exists()
    assert not file_created.exists()
    assert said == []


def test_record_round_trip_and_leftovers(tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    record = HostRecord(
        sysctls={"kernel.this-key-does-not-exist": None},
        paths={str(watched): None},
        owned_dirs=[str(tmp_path / "node")],
    )
    path = tmp_path / "host.json"
    record.save(path)
    assert HostRecord.load(path) == record
    assert HostRecord.load(tmp_path / "absent.json") is None
    assert not any(item.startswith("path ") for item in leftovers(record, "zeta-test-br"))
    watched.mkdir()
    assert f"path {watched}" in leftovers(record, "zeta-test-br")
