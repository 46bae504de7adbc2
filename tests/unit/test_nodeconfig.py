"""The real node's configuration, built without I/O: containerd, the kubelet, kube-proxy, the
CNI network and the components' kubeconfigs."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

from zeta_router_dev.cluster import nodeconfig as nc
from zeta_router_dev.cluster.controlplane import (
    SERVICE_CLUSTER_IP_RANGE,
    kubernetes_service_ip,
)

LAYOUT = nc.NodeLayout(Path("/state/node"), image_store=Path("/cache/containerd"))


def test_address_ranges_are_reserved_for_network_tests() -> None:
    benchmark = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544
    pods = ipaddress.ip_network(nc.POD_CIDR)
    services = ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)
    assert pods.subnet_of(benchmark)
    assert services.subnet_of(benchmark)
    assert not pods.overlaps(services)
    assert ipaddress.ip_address(nc.BRIDGE_ADDRESS) in pods
    assert kubernetes_service_ip() == "198.19.0.1"
    assert nc.bridge_prefix() == 24


def test_containerd_config() -> None:
    cfg = tomllib.loads(nc.containerd_config(LAYOUT, "localhost/pause:1"))
    assert cfg["root"] == "/cache/containerd/root"
    assert cfg["state"] == "/run/zeta-node/containerd"
    assert cfg["grpc"]["address"] == "/run/zeta-node/containerd.sock"
    assert len(cfg["grpc"]["address"]) < 108  # a unix socket path's limit
    assert cfg["plugins"]["io.containerd.internal.v1.opt"]["path"] == "/cache/containerd/opt"
    cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj: the one setting that matters.
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == "localhost/pause:1"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"] == {
        "SystemdCgroup": False,
        "BinaryName": "/usr/sbin/runc",
        "Root": "/run/zeta-node/runc",
    }
    assert cri["cni"]["conf_dir"] == "/state/node/etc/cni"
    assert str(LAYOUT.netns_dir).startswith(cfg["state"])


def test_cni_network() -> None:
    conf = nc.cni_conflist(LAYOUT)
    bridge, portmap = conf["plugins"]
    assert bridge["bridge"] == nc.BRIDGE
    assert bridge["isGateway"]
    assert bridge["hairpinMode"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": nc.POD_CIDR, "gateway": nc.BRIDGE_ADDRESS}]]
    assert bridge["ipam"]["dataDir"] == "/state/node/cni-ipam"
    assert portmap["type"] == "portmap"
    assert len(nc.BRIDGE) <= 15  # an interface name's limit


def test_kubelet() -> None:
    cfg = nc.kubelet_config(LAYOUT, Path("/ca.crt"))
    assert cfg["address"] == nc.BRIDGE_ADDRESS
    assert cfg["authentication"]["anonymous"] == {"enabled": False}
    assert cfg["authentication"]["x509"] == {"clientCAFile": "/ca.crt"}
    assert cfg["authorization"] == {"mode": "Webhook"}
    assert cfg["clusterDNS"] == [nc.BRIDGE_ADDRESS]
    assert cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["imageGCHighThresholdPercent"] == 100  # built images cannot be pulled again
    args = nc.kubelet_args(LAYOUT, Path("/bin/kubelet"), "localhost/pause:1")
    assert "--container-runtime-endpoint=unix:///run/zeta-node/containerd.sock" in args
    assert f"--node-ip={nc.BRIDGE_ADDRESS}" in args
    assert f"--hostname-override={nc.NODE_NAME}" in args
    assert "--root-dir=/state/node/kubelet" in args


def test_kube_proxy_and_scheduler() -> None:
    cfg = nc.kube_proxy_config(LAYOUT)
    assert cfg["mode"] == "iptables"
    assert cfg["clusterCIDR"] == nc.POD_CIDR
    # NodePorts never open on the machine's real interfaces.
    assert cfg["nodePortAddresses"] == [f"{nc.BRIDGE_ADDRESS}/32"]
    assert cfg["conntrack"]["maxPerCore"] == 0  # the host's conntrack settings stay
    assert cfg["healthzBindAddress"].startswith("127.0.0.1:")
    args = nc.kube_scheduler_args(LAYOUT, Path("/bin/kube-scheduler"))
    assert "--secure-port=0" in args
    assert "--kubeconfig=/state/node/etc/kube-scheduler.kubeconfig" in args


def test_component_kubeconfig_and_identities() -> None:
    kc = nc.client_kubeconfig("https://198.18.0.1:6443", b"CA", Path("/c"), Path("/k"), "u")
    assert kc["clusters"][0]["cluster"]["server"] == "https://198.18.0.1:6443"
    assert kc["users"][0]["user"] == {"client-certificate": "/c", "client-key": "/k"}
    user, group = nc.COMPONENT_IDENTITIES["kubelet"]
    assert (user, group) == (f"system:node:{nc.NODE_NAME}", "system:nodes")
