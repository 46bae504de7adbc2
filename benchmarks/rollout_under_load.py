"""Day-2 operations on a real node, under client load through the entry Service, and what the
clients saw: a tier template change (both tiers), an operator upgrade (a new operator image,
hence a new router image in every tier), a scale-down and pod deletions with streamed answers in
flight.

What runs is what a user runs: the chart installs the operator as a pod from the image built
here (`make images`), the CPU sample runs with the local model-server image, and the clients are
the official openai client on this machine, talking to the entry Service's ClusterIP, retries
off. Prints, per operation: requests sent, answered, failed (by cause), truncated streams, and
the order in which tiers rolled. The aim is zero failed and zero truncated; the pass/fail check
of the same operations is tests/e2e/test_real_node_rollouts.py. Figures only here.

With ``--busy N`` the operations run while N processes of the benchmark's own spin on the
cores (bounded by ``--busy-bound``, stopped by their PIDs at the end): endpoint removal, image
starts and the clients all slow down, as on a machine that other work keeps busy. ``--repeat
N`` runs the template change and the operator upgrade N times each.

    .venv/bin/python benchmarks/rollout_under_load.py            # starts a real node, stops it
    .venv/bin/python benchmarks/rollout_under_load.py --attach   # `cluster up --node real` ran
    .venv/bin/python benchmarks/rollout_under_load.py --busy 2 --repeat 5 --no-streams
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from zeta_router.kube import ApiError, Kube, api_path
from zeta_router_dev.busy_load import BusyLoad
from zeta_router_dev.cluster.node import RealNode, default_node_dir, unavailable_reason
from zeta_router_dev.cluster.rollouts import UPGRADED_TAG, Outcome, Stack
from zeta_router_dev.cluster.workloads import helm
from zeta_router_dev.images.build import ImageBuilder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--attach",
        action="store_true",
        help="use the real node already running in --state-dir instead of starting one",
    )
    parser.add_argument("--state-dir", type=Path, default=None, help="the node's state folder")
    parser.add_argument("--clients", type=int, default=3, help="steady-load clients")
    parser.add_argument("--streams", type=int, default=4, help="streams in flight")
    parser.add_argument(
        "--busy", type=int, default=0, metavar="N",
        help="processes spinning on the cores while the operations run (default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--busy-bound", type=float, default=7200.0, metavar="S",
        help="each spinning process stops by itself after this long (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="template changes and operator upgrades, N of each, alternating (default: 1)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-files", action="store_true",
        help="keep the node's state directory (every container's log) and print where it is",
    )  # fmt: skip
    parser.add_argument(
        "--no-streams", action="store_true",
        help="skip the scale-down and the pod deletions with streams in flight",
    )  # fmt: skip
    args = parser.parse_args()

    started_here = not args.attach
    state_dir = args.state_dir or (
        default_node_dir() if args.attach else Path(tempfile.mkdtemp(prefix="zeta-day2-")) / "node"
    )
    node = RealNode(state_dir)
    if started_here:
        reason = unavailable_reason()
        if reason is not None and "lock" not in reason:
            print(f"rollout benchmark skipped: a real node cannot run here: {reason}")
            return 0
    elif not node.status().running:
        print(f"no real node runs in {state_dir}: start one with `zeta-router cluster up "
              "--node real`, or run without --attach")  # fmt: skip
        return 2
    # Starts the node (holding the host-wide lock, waiting for it) or returns the running one.
    info = node.up(timeout=600, lock_wait=600, images=ImageBuilder().build())
    kube = Kube.from_kubeconfig(info.kubeconfig)
    stack = Stack(kube, info.kubeconfig, node.layout.containerd_socket)
    t0 = time.monotonic()
    busy = BusyLoad(args.busy, args.busy_bound)
    try:
        stack.up()
        print(f"stack up in {time.monotonic() - t0:.0f} s (operator pod, two tiers ready)")
        if args.busy:
            busy.start()
            print(f"{args.busy} spinning processes keep the cores busy (PIDs {busy.pids})")
        outcomes: list[tuple[str, Outcome]] = []

        def run(kind: str, outcome: Outcome) -> None:
            outcomes.append((kind, outcome))
            print(outcome.summary(), flush=True)

        for i in range(args.repeat):
            run("template change", stack.template_change())
            suffix = UPGRADED_TAG if i == 0 else f"{UPGRADED_TAG}{i + 1}"
            run("operator upgrade", stack.operator_upgrade(suffix))
        if not args.no_streams:
            run("scale-down, streams", stack.scale_down_with_streams(streams=args.streams))
            run("pod deletions, streams", stack.delete_pods_with_streams(streams=args.streams))
        busy.stop()
        print()
        for kind in dict.fromkeys(k for k, _ in outcomes):
            mine = [o.clients for k, o in outcomes if k == kind]
            print(
                f"{kind} x{len(mine)}: {sum(c.sent for c in mine)} requests, "
                f"{sum(c.answered for c in mine)} answered, "
                f"{sum(sum(c.failed.values()) for c in mine)} failed, "
                f"{sum(c.truncated for c in mine)} truncated"
                + (f" (cores kept busy by {args.busy} processes)" if args.busy else "")
            )
        lost = sum(o.clients.lost for _, o in outcomes)
        sent = sum(o.clients.sent for _, o in outcomes)
        print(f"\ntotal: {sent} requests, {lost} failed or truncated (aim: 0)")
    finally:
        busy.stop()
        try:
            helm(info.kubeconfig, "uninstall", stack.release, "--namespace",
                 stack.operator_namespace)  # fmt: skip
        except Exception as e:  # cleaning up must not hide the figures
            print(f"(helm uninstall: {e})", file=sys.stderr)
        try:
            stack.remove_tags()
        except RuntimeError as e:
            print(f"({e})", file=sys.stderr)
        for ns in (stack.namespace, stack.operator_namespace):
            with contextlib.suppress(ApiError):
                kube.delete(api_path("v1", "namespaces", None, ns))
        if started_here:
            node.down(keep_files=args.keep_files)
            if args.keep_files:
                print(f"the node's files (container logs under it): {state_dir}")
            elif args.state_dir is None:  # the temporary folder made above
                shutil.rmtree(state_dir.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
