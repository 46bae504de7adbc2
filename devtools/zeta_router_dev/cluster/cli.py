"""`zeta-router cluster up|down|status`: the local cluster for humans, with a real node or the
kubelet stand-in."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zeta_router_dev.cluster.binaries import MissingBinaryError
from zeta_router_dev.cluster.controlplane import (
    ControlPlaneError,
    LocalControlPlane,
    default_state_dir,
)
from zeta_router_dev.cluster.lock import LOCK_PATH

NODE_KINDS = ("standin", "real")


def _default_node_dir() -> Path:
    from zeta_router_dev.cluster.node import default_node_dir

    return default_node_dir()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a real Kubernetes 1.20 control plane (etcd, kube-apiserver, "
        "kube-controller-manager) on this machine, for trying the operator without a cluster. "
        "The binaries come from `make control-plane`.\n\n"
        "--node standin (the default): everything on 127.0.0.1 and no container runs; pods of "
        "ZetaRouters are bound and marked ready by a stand-in kubelet (unless --no-kubelet). "
        "Quick, needs no root and changes nothing on the machine.\n\n"
        "--node real: a real node too: containerd and runc, the kubelet, kube-proxy (iptables), "
        "kube-scheduler, a CNI bridge and a small cluster DNS; pods run from the images "
        "`make images` builds (no registry). Needs root, changes the machine's network and "
        "kernel settings (all restored by `down`), and holds the host-wide lock "
        f"{LOCK_PATH}: one real node per machine. Pods use 198.18.0.0/24 and Services "
        "198.19.0.0/16 (ranges reserved for network tests); the apiserver, the kubelet and the "
        "DNS listen on the node's bridge, 198.18.0.1. See docs/local-cluster.md."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  zeta-router cluster up                  # stand-in; prints the KUBECONFIG line\n"
        '  eval "$(zeta-router cluster up --quiet)"\n'
        "  zeta-router cluster up --node real      # real pods (make images first)\n"
        "  zeta-router cluster status\n"
        "  zeta-router cluster down                # whatever runs in the default folders\n"
    )
    parser.add_argument(
        "action", choices=("up", "down", "status"), help="start, stop or describe the cluster"
    )
    parser.add_argument(
        "--node",
        choices=NODE_KINDS,
        default=None,
        help="up: the kind of node (default standin); down/status: only that kind (default: both)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where data, keys, logs, PIDs and the kubeconfig live (default "
        f"{default_state_dir()} for the stand-in, {_default_node_dir()} for a real node)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait for readiness (up)"
    )
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        help="up --node real: seconds to wait for the real node lock when another node holds "
        "it (default 0: fail at once, saying who holds it)",
    )
    parser.add_argument(
        "--no-kubelet",
        action="store_true",
        help="stand-in only: do not start the kubelet stand-in (pods then stay Pending)",
    )
    parser.add_argument(
        "--keep-files",
        action="store_true",
        help="down: keep the state directory (logs, etcd data) instead of deleting it",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="up: print only the `export KUBECONFIG=...` line"
    )


def run(args: argparse.Namespace) -> int:
    if args.no_kubelet and args.node == "real":
        print("error: --no-kubelet is for --node standin", file=sys.stderr)
        return 2
    if args.action == "up":
        if (args.node or "standin") == "real":
            return _up_real(args)
        return _up_standin(LocalControlPlane(args.state_dir), args)
    kinds = [args.node] if args.node else list(NODE_KINDS)
    if args.state_dir is not None and args.node is None:
        kinds = [_kind_in(args.state_dir)]
    if args.action == "down":
        return _down(kinds, args)
    return _status(kinds, args)


def _kind_in(state_dir: Path) -> str:
    from zeta_router_dev.cluster.node import NODE_STATE

    return "real" if (state_dir / NODE_STATE).exists() else "standin"


def _up_standin(plane: LocalControlPlane, args: argparse.Namespace) -> int:
    def say(msg: str) -> None:
        if not args.quiet:
            print(f"-- {msg}", file=sys.stderr)

    try:
        state = plane.up(timeout=args.timeout or 180.0, kubelet=not args.no_kubelet, log=say)
    except (MissingBinaryError, ControlPlaneError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"control plane ready at {state.server}", file=sys.stderr)
        print(f"logs and PIDs under {state.state_dir}", file=sys.stderr)
        print("use it with:", file=sys.stderr)
    print(f"export KUBECONFIG={state.kubeconfig}")
    return 0


def _up_real(args: argparse.Namespace) -> int:
    from zeta_router_dev.cluster.node import NodeError, RealNode

    def say(msg: str) -> None:
        if not args.quiet:
            print(f"-- {msg}", file=sys.stderr)

    node = RealNode(args.state_dir)
    try:
        info = node.up(timeout=args.timeout or 300.0, lock_wait=args.lock_wait, log=say)
    except (NodeError, MissingBinaryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(
            f"real node Ready in {info.ready_seconds:.0f}s; apiserver {info.server}",
            file=sys.stderr,
        )
        print(f"logs and PIDs under {info.state_dir} (stop with `zeta-router cluster down`)",
              file=sys.stderr)  # fmt: skip
        print("use it with:", file=sys.stderr)
    print(f"export KUBECONFIG={info.kubeconfig}")
    return 0


def _down(kinds: list[str], args: argparse.Namespace) -> int:
    stopped: list[str] = []
    for kind in kinds:
        if kind == "real":
            from zeta_router_dev.cluster.node import RealNode

            def say(msg: str) -> None:
                print(f"-- {msg}", file=sys.stderr)

            stopped += RealNode(args.state_dir).down(keep_files=args.keep_files, log=say)
        else:
            stopped += LocalControlPlane(args.state_dir).down(keep_files=args.keep_files)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _status(kinds: list[str], args: argparse.Namespace) -> int:
    found = False
    healthy = True
    for kind in kinds:
        if kind == "real":
            from zeta_router_dev.cluster.node import RealNode

            node = RealNode(args.state_dir).status()
            if not node.exists:
                continue
            found = True
            print(f"real node in {node.state_dir}:")
            for name, pid, alive, log in node.components:
                print(f"  {name:<25} pid {pid:<8} {'running' if alive else 'STOPPED':<8} {log}")
            print(f"  {node.detail}")
            if node.kubeconfig:
                print(f"export KUBECONFIG={node.kubeconfig}")
            healthy = healthy and node.running
            continue
        st = LocalControlPlane(args.state_dir).status()
        if not st.exists:
            continue
        found = True
        print(f"control plane with the kubelet stand-in in {st.state_dir}:")
        for c in st.components:
            print(f"  {c.name:<25} pid {c.pid:<8} {'running' if c.alive else 'STOPPED':<8} {c.log}")
        print(
            f"  apiserver {st.server}: {'ready' if st.ready else 'NOT READY'} ({st.ready_detail})"
        )
        print(f"export KUBECONFIG={st.kubeconfig}")
        healthy = healthy and st.running
    if not found:
        where = args.state_dir or " or ".join(
            str(d)
            for k, d in (("standin", default_state_dir()), ("real", _default_node_dir()))
            if k in kinds
        )
        print(f"no cluster in {where}")
        return 3
    return 0 if healthy else 1
