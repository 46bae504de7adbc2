"""matplotlib for the commands that draw a PNG (``eval/fit --plot``, ``simulate --plot``).

matplotlib is an optional extra (``zeta-router[plot]``): the operator and the router sidecars
never draw, so the image does not carry it. Checked before any work starts, so a run that
cannot write its plot says so at once instead of after the computation.
"""

from __future__ import annotations

import importlib.util
from typing import Any

INSTALL_HINT = "pip install 'zeta-router[plot]'"


class PlottingUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise PlottingUnavailableError(
            f"--plot needs matplotlib, which is not installed; {INSTALL_HINT}"
        )


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
