"""zeta-router's development tooling: the local cluster (control plane, real node or kubelet
stand-in), local process helpers (llama.cpp servers, Prometheus, routers, the operator), image
builds and the demo.

Installed by ``make venv`` from ``devtools/``; never shipped in the image, never imported by
``zeta_router``. It adds ``zeta-router demo`` and ``zeta-router cluster`` through the
``zeta_router.commands`` entry points (see :mod:`zeta_router_dev.commands`).
"""
