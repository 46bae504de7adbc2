"""The failure reasons docs/router.md lists are the ones the router exports, word for word."""

from __future__ import annotations

import re
from pathlib import Path

from zeta_router.router.upstream import FAILURE_REASONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "router.md"


def test_failure_reasons_in_the_docs_are_the_exported_ones() -> None:
    text = DOC.read_text()
    start = text.index("<!-- failure reasons:")
    end = text.index("<!-- end of failure reasons -->")
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (.+) \|$", text[start:end], re.M)
    assert dict(rows) == FAILURE_REASONS, (
        "docs/router.md's failure reasons differ from upstream.FAILURE_REASONS; the table is:\n"
        + "\n".join(f"| `{k}` | {v} |" for k, v in FAILURE_REASONS.items())
    )
