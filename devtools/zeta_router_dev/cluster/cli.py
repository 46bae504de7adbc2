"""`zeta-router cluster up|down|status`: the local control plane for humans."""

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a real Kubernetes 1.20 control plane (etcd, kube-apiserver, "
        "kube-controller-manager) on 127.0.0.1, for trying the operator without a cluster. "
        "The binaries come from `make control-plane`. Without a kubelet, pods of ZetaRouters "
        "are bound and marked ready by a stand-in (started by `up` unless --no-kubelet)."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  zeta-router cluster up            # prints the KUBECONFIG line to use\n"
        '  eval "$(zeta-router cluster up --quiet)"\n'
        "  zeta-router cluster status\n"
        "  zeta-router cluster down\n"
    )
    parser.add_argument(
        "action", choices=("up", "down", "status"), help="start, stop or describe the cluster"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where data, keys, logs, PIDs and the kubeconfig live "
        f"(default {default_state_dir()})",
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for readiness (up)"
    )
    parser.add_argument(
        "--no-kubelet",
        action="store_true",
        help="do not start the kubelet stand-in (pods then stay Pending)",
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
    plane = LocalControlPlane(args.state_dir)
    if args.action == "up":
        return _up(plane, args)
    if args.action == "down":
        stopped = plane.down(keep_files=args.keep_files)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    return _status(plane)


def _up(plane: LocalControlPlane, args: argparse.Namespace) -> int:
    def say(msg: str) -> None:
        if not args.quiet:
            print(f"-- {msg}", file=sys.stderr)

    try:
        state = plane.up(timeout=args.timeout, kubelet=not args.no_kubelet, log=say)
    except (MissingBinaryError, ControlPlaneError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"control plane ready at {state.server}", file=sys.stderr)
        print(f"logs and PIDs under {state.state_dir}", file=sys.stderr)
        print("use it with:", file=sys.stderr)
    print(f"export KUBECONFIG={state.kubeconfig}")
    return 0


def _status(plane: LocalControlPlane) -> int:
    st = plane.status()
    if not st.exists:
        print(f"no control plane in {st.state_dir}")
        return 3
    for c in st.components:
        print(f"{c.name:<25} pid {c.pid:<8} {'running' if c.alive else 'STOPPED':<8} {c.log}")
    print(f"apiserver {st.server}: {'ready' if st.ready else 'NOT READY'} ({st.ready_detail})")
    print(f"export KUBECONFIG={st.kubeconfig}")
    return 0 if st.running else 1
