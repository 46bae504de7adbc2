"""Where the labelled routing-evaluation data lives, for the tests that need all of it.

``$ZETA_ROUTER_EVAL_DATA`` if set, else the copy in ``data/routing-eval`` (see its README and
LICENSE): its ``mmlu/`` folder for the MMLU figures, ``gsm8k-dev/`` for the math word
problems. A small subset ships in ``tests/unit/data/routing_eval_small`` for the tests that do
not need everything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = REPO / "tests" / "unit" / "data" / "routing_eval_small"


def _root(sub: str) -> Path:
    env = os.environ.get("ZETA_ROUTER_EVAL_DATA")
    path = Path(env) if env else REPO / "data" / "routing-eval"
    if not (path / sub).is_dir():
        # These tests check shipped figures; a missing folder is a broken checkout, not a skip.
        pytest.fail(
            f"routing-eval data {sub}/ not found in {path} "
            "(set ZETA_ROUTER_EVAL_DATA to its folder)"
        )
    return path / sub


def full_data_dir() -> Path:
    """All the MMLU data (its contamination list sits in the folder above)."""
    return _root("mmlu")


GSM8K_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
GSM8K_STRONG = "gpt-4-1106-preview"


def gsm8k_dev_dir() -> Path:
    """The math word problems with both models' answers."""
    return _root("gsm8k-dev")
