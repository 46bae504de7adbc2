"""Where the labelled routing-evaluation data lives, for the tests that need all of it.

``$ZETA_ROUTER_EVAL_DATA`` if set, else the copy in ``data/routing-eval`` (see its README and
LICENSE). A small subset ships in ``tests/unit/data/routing_eval_small`` for the tests that do not
need everything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = REPO / "tests" / "unit" / "data" / "routing_eval_small"


def full_data_dir() -> Path:
    env = os.environ.get("ZETA_ROUTER_EVAL_DATA")
    path = Path(env) if env else REPO / "data" / "routing-eval"
    if not (path / "mmlu").is_dir():
        # These tests check shipped figures; a missing folder is a broken checkout, not a skip.
        pytest.fail(
            f"full routing-eval data not found at {path} (set ZETA_ROUTER_EVAL_DATA to its folder)"
        )
    return path
