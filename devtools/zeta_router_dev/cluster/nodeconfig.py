"""The configuration of a real local node, as pure builders: containerd's ``config.toml``, the
kubelet's ``KubeletConfiguration``, kube-proxy's ``KubeProxyConfiguration``, the CNI network and
the components' kubeconfigs. :class:`NodeLayout` says where everything lives.

The network: pods get addresses in :data:`POD_CIDR` on the bridge :data:`BRIDGE`, whose address
:data:`BRIDGE_ADDRESS` is the pods' gateway, the node's InternalIP, and where the apiserver, the
kubelet and the cluster DNS listen. Services get addresses in the control plane's Service range;
kube-proxy programs them with iptables. Both ranges are reserved for network testing (RFC 2544,
198.18.0.0/15), so no test traffic can target an address of a real network.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from zeta_router_dev.cluster.controlplane import SERVICE_CLUSTER_IP_RANGE

POD_CIDR: Final = "198.18.0.0/24"
BRIDGE: Final = "zeta-cni0"
"""The node's bridge (not `cni0`: a name of our own, so nothing else's bridge is ever touched)."""
BRIDGE_ADDRESS: Final = "198.18.0.1"
SERVICE_CIDR: Final = SERVICE_CLUSTER_IP_RANGE
CLUSTER_DOMAIN: Final = "cluster.local"
CNI_NETWORK: Final = "zeta-pods"
NODE_NAME: Final = "zeta-node"
KUBELET_PORT: Final = 10250
KUBELET_HEALTHZ_PORT: Final = 10248
KUBE_PROXY_HEALTHZ_PORT: Final = 10256
KUBE_PROXY_METRICS_PORT: Final = 10249
RUN_DIR: Final = Path("/run/zeta-node")
"""Runtime state of the one real node this machine may run (sockets, runc state, netns)."""
CNI_BIN_DIR: Final = Path("/usr/lib/cni")
RUNC: Final = Path("/usr/sbin/runc")


def bridge_prefix() -> int:
    return ipaddress.ip_network(POD_CIDR).prefixlen


@dataclass(frozen=True)
class NodeLayout:
    """Where a node's files live: configuration, data and logs under ``state_dir``; sockets and
    runtime state under :data:`RUN_DIR` (short paths: a unix socket path has at most 107
    bytes)."""

    state_dir: Path
    run_dir: Path = RUN_DIR
    image_store: Path | None = None
    """containerd's root (its content store and unpacked images), kept across nodes so that
    images are imported once; ``None``: under ``state_dir`` (removed with the node)."""

    @property
    def etc(self) -> Path:
        return self.state_dir / "etc"

    @property
    def pki(self) -> Path:
        return self.state_dir / "etc" / "pki"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def cluster_dir(self) -> Path:
        """The control plane's state directory."""
        return self.state_dir / "cluster"

    @property
    def containerd_root(self) -> Path:
        return self.image_store or self.state_dir / "containerd"

    @property
    def containerd_state(self) -> Path:
        return self.run_dir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def netns_dir(self) -> Path:
        """Where containerd's CRI plugin mounts pods' network namespaces
        (``netns_mounts_under_state_dir``)."""
        return self.containerd_state / "io.containerd.grpc.v1.cri" / "netns"

    @property
    def runc_root(self) -> Path:
        return self.run_dir / "runc"

    @property
    def kubelet_root(self) -> Path:
        return self.state_dir / "kubelet"

    @property
    def cni_conf_dir(self) -> Path:
        return self.etc / "cni"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.state_dir / "cni-ipam"

    @property
    def containerd_config(self) -> Path:
        return self.etc / "containerd.toml"

    @property
    def kubelet_config(self) -> Path:
        return self.etc / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.etc / "kube-proxy.yaml"

    def kubeconfig(self, component: str) -> Path:
        return self.etc / f"{component}.kubeconfig"


def _toml_string(value: str | Path) -> str:
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def containerd_config(layout: NodeLayout, sandbox_image: str) -> str:
    """containerd 1.6 configuration for a kubelet 1.20 node: the CRI plugin with the runc v2
    shim and cgroupfs, CNI from Debian's plugins, a locally built sandbox image, and every path
    under the node's own folders (nothing under /var/lib/containerd, /opt or /run/containerd
    except the shims' sockets, whose folder containerd 1.6 fixes)."""
    q = _toml_string
    return f"""# containerd for the zeta-router local node (generated; see nodeconfig.py)
version = 2
root = {q(layout.containerd_root / "root")}
state = {q(layout.containerd_state)}

[grpc]
  address = {q(layout.containerd_socket)}

[ttrpc]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = {q(layout.containerd_root / "opt")}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {q(sandbox_image)}
  enable_selinux = false
  # Nothing may lower oom_score_adj below its own without CAP_SYS_RESOURCE, which machines
  # like ours lack: the sandbox default (-998) and Guaranteed pods (-997) then make runc fail
  # ("can't get final child's PID from pipe"). Clamp them to containerd's own score instead.
  restrict_oom_score_adj = true
  # Pod network namespaces under the node's runtime folder, not /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = {q(RUNC)}
        Root = {q(layout.runc_root)}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {q(CNI_BIN_DIR)}
    conf_dir = {q(layout.cni_conf_dir)}
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
"""


def cni_conflist(layout: NodeLayout) -> dict[str, Any]:
    """The pods' network: a bridge with the node as gateway, host-local addresses from
    :data:`POD_CIDR` (its state under the node's folder), masquerading of traffic leaving the
    pod range, hairpin so a pod reaches itself through a Service, and host ports."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": BRIDGE_ADDRESS}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(layout: NodeLayout, ca_cert: Path) -> dict[str, Any]:
    """The kubelet's configuration: API on the bridge address, authenticated by client
    certificate (the apiserver has one) and authorized by the apiserver; cgroupfs (cgroup v1,
    no systemd); the cluster DNS on the bridge address; images never garbage-collected (they
    are built here and cannot be pulled again); evictions only when the machine is really
    full."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": BRIDGE_ADDRESS,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [BRIDGE_ADDRESS],
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "10s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kubelet_args(
    layout: NodeLayout, binary: Path, sandbox_image: str, verbosity: int = 2
) -> list[str]:
    return [
        str(binary),
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={layout.kubeconfig('kubelet')}",
        "--container-runtime=remote",
        f"--container-runtime-endpoint=unix://{layout.containerd_socket}",
        # The kubelet never garbage-collects this image; containerd runs it as the sandbox.
        f"--pod-infra-container-image={sandbox_image}",
        f"--root-dir={layout.kubelet_root}",
        f"--cert-dir={layout.kubelet_root / 'pki'}",
        f"--node-ip={BRIDGE_ADDRESS}",
        f"--hostname-override={NODE_NAME}",
        f"--v={verbosity}",
    ]


def kube_proxy_config(layout: NodeLayout) -> dict[str, Any]:
    """kube-proxy in iptables mode, its endpoints on 127.0.0.1, NodePorts only on the bridge
    (never on the machine's real interfaces), and the host's conntrack settings left alone."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "bindAddress": BRIDGE_ADDRESS,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"127.0.0.1:{KUBE_PROXY_METRICS_PORT}",
        "nodePortAddresses": [f"{BRIDGE_ADDRESS}/32"],
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"syncPeriod": "10s", "minSyncPeriod": "1s"},
    }


def kube_scheduler_args(layout: NodeLayout, binary: Path) -> list[str]:
    kubeconfig = layout.kubeconfig("kube-scheduler")
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false",
        "--port=0",
        "--secure-port=0",
        "--v=1",
    ]


def client_kubeconfig(
    server: str, ca_pem: bytes, cert: Path, key: Path, user: str
) -> dict[str, Any]:
    """A kubeconfig that authenticates with a client certificate (the node's components)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "zeta-local",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": user, "context": {"cluster": "zeta-local", "user": user}}],
        "current-context": user,
    }


# Who each component is to the apiserver: default RBAC (and the Node authorizer for the
# kubelet) grants each exactly its rights, so no role is created.
COMPONENT_IDENTITIES: Final[dict[str, tuple[str, str]]] = {
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", ""),
    "kube-scheduler": ("system:kube-scheduler", ""),
}
