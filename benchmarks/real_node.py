"""How long the real local node takes: image builds (warm check, and cold with ``--cold``),
node up, the CPU sample's tiers Ready as pods, the first answer through the entry Service, the
answer latency from the host through the ClusterIP, and node down (which restores the machine).

    python benchmarks/real_node.py [--cold] [--requests N]

Needs what the real node needs (root, ``make prepare``) and the host-wide lock, which it waits
for (up to 10 minutes) when another real node runs. ``--cold`` also builds every image from
scratch into a temporary image folder (the debootstrap included), leaving the cache alone.
Without a way to run a real node it prints why and exits 0. Figures only; this never fails on
their values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from zeta_router.kube import Kube, api_path
from zeta_router_dev.cluster.node import RealNode, unavailable_reason
from zeta_router_dev.cluster.workloads import (
    install_operator,
    load_cpu_sample,
    localize_zetarouter,
    service_url,
    wait_until,
)
from zeta_router_dev.images.build import ImageBuilder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="also time a cold image build")
    parser.add_argument("--requests", type=int, default=20, help="answers timed (default 20)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None and "lock" not in reason:
        print(f"real node benchmark skipped: {reason}")
        return 0
    figures: dict[str, float] = {}
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="zeta-images-cold-") as d:
            t0 = time.monotonic()
            built = ImageBuilder(Path(d)).build()
            figures["images cold build (s)"] = time.monotonic() - t0
            for image in built:
                figures[f"  {image.name} (s)"] = image.seconds
    t0 = time.monotonic()
    images = ImageBuilder().build()
    figures["images warm check (s)"] = time.monotonic() - t0

    with tempfile.TemporaryDirectory(prefix="zeta-node-bench-") as d:
        node = RealNode(Path(d) / "node")
        t0 = time.monotonic()
        info = node.up(timeout=300, lock_wait=600, images=images)
        figures["node up to Ready and Services answering (s)"] = time.monotonic() - t0
        try:
            kube = Kube.from_kubeconfig(info.kubeconfig)
            t0 = time.monotonic()
            install_operator(info.kubeconfig, "zr", "zeta-system", ["bench"], "zr-bench")
            figures["operator installed by helm, pod Ready (s)"] = time.monotonic() - t0
            zr = localize_zetarouter(load_cpu_sample(), namespace="bench")
            t0 = time.monotonic()
            kube.create(api_path("zeta.ai/v1alpha1", "zetarouters", "bench"), zr)
            path = api_path("zeta.ai/v1alpha1", "zetarouters", "bench", zr["metadata"]["name"])

            def ready() -> bool:
                conds = (kube.get(path).get("status") or {}).get("conditions") or []
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

            wait_until(ready, 300, "the ZetaRouter Ready")
            figures["CPU sample applied to both tiers' pods Ready (s)"] = time.monotonic() - t0
            import openai

            client = openai.OpenAI(
                base_url=service_url(kube, "bench", zr["metadata"]["name"]) + "/v1",
                api_key="unused",
                max_retries=0,
                timeout=120,
            )
            latencies = []
            for i in range(args.requests):
                t0 = time.monotonic()
                client.chat.completions.create(
                    model=zr["metadata"]["name"],
                    messages=[{"role": "user", "content": "Say hello."}],
                    max_tokens=8,
                    extra_headers={"X-Zeta-Tier": ("small", "large")[i % 2]},
                )
                latencies.append(time.monotonic() - t0)
            figures["first answer through the entry Service (s)"] = latencies[0]
            figures[f"answer p50 over {len(latencies)}, 8 tokens (s)"] = statistics.median(
                latencies
            )
        finally:
            t0 = time.monotonic()
            node.down()
            figures["node down, machine restored (s)"] = time.monotonic() - t0
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
