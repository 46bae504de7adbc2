"""What the product costs to install and to start: the installed size of what the image carries
(`pip install .` of a checkout into a fresh virtual environment: the product and its runtime
dependencies, nothing else), the router sidecar's import time and its resident memory once it
serves. Prints figures; never fails on them.

    python benchmarks/footprint.py                   # this checkout
    python benchmarks/footprint.py --checkout DIR    # another one (e.g. an older commit's worktree)

The import time is the median over --runs fresh interpreters of `import zeta_router.router.cli`
plus what `zeta-router router` loads before it serves (the app and uvloop).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

IMPORT_SNIPPET = (
    "import time; t = time.perf_counter(); "
    "import zeta_router.cli, zeta_router.router.cli, zeta_router.router.app, uvloop; "
    "print(time.perf_counter() - t)"
)


def dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def installed(checkout: Path, venv: Path) -> dict[str, float]:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    base_site = next((venv / "lib").glob("python3*/site-packages"))
    before = dir_size(base_site)  # pip and setuptools of the empty venv
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(checkout)],
        check=True,
    )
    after = dir_size(base_site)
    packages = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {"installed_mb": (after - before) / 1e6, "packages": float(len(packages))}


def import_time(venv: Path, runs: int) -> float:
    py = venv / "bin" / "python"
    times = []
    for _ in range(runs):
        out = subprocess.run(
            [str(py), "-c", IMPORT_SNIPPET], check=True, capture_output=True, text=True
        ).stdout
        times.append(float(out.strip()))
    return statistics.median(times)


def router_rss(venv: Path) -> float:
    port = free_port()
    exe = venv / "bin" / "zeta-router"
    argv = [str(exe), "router", "--tier", "small=http://127.0.0.1:9", "--port", str(port)]
    helptext = subprocess.run([*argv[:2], "--help"], capture_output=True, text=True).stdout
    if "--admin-port" in helptext:  # health on its own port (older releases served it on --port)
        port = free_port()
        argv += ["--admin-port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the router did not start") from None
                time.sleep(0.1)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        return kb / 1024
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkout", type=Path, default=REPO)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zeta-footprint-"))
    try:
        venv = work / "venv"
        size = installed(args.checkout.resolve(), venv)
        imp = import_time(venv, args.runs)
        rss = router_rss(venv)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb, n = size["installed_mb"], size["packages"]
    print(f"checkout:           {args.checkout.resolve()}")
    print(f"installed:          {mb:.1f} MB in {n:.0f} packages (pip install . in a fresh venv)")
    print(f"router import time: {imp * 1000:.0f} ms (median of {args.runs})")
    print(f"router RSS serving: {rss:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
