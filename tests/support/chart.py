"""The Helm chart in tests: rendering it, and the values reference generated from values.yaml.

Run ``python tests/support/chart.py`` to print the values table that docs/install.md carries
(a unit test fails when the two differ).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "zeta-router"
VALUES = CHART / "values.yaml"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")
_DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")
_DOC_MORE = re.compile(r"^ *# ?(?P<text>.*)$")


@dataclass(frozen=True)
class ValueDoc:
    path: str
    default: Any
    text: str


def _lookup(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def value_docs(text: str | None = None) -> list[ValueDoc]:
    """The values documented with a ``# --`` comment, in file order, with their defaults."""
    text = VALUES.read_text(encoding="utf-8") if text is None else text
    values = yaml.safe_load(text)
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    out: list[ValueDoc] = []
    for line in text.splitlines():
        doc = _DOC.match(line)
        if doc:
            pending = [doc.group("text").strip()]
            continue
        if pending is not None and line.lstrip().startswith("#"):
            more = _DOC_MORE.match(line)
            pending.append(more.group("text").strip() if more else "")
            continue
        key = _KEY.match(line)
        if not key:
            if not line.strip() or line.lstrip().startswith(("#", "-")):
                continue
            pending = None
            continue
        indent = len(key.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [key.group("key")])
        stack.append((indent, key.group("key")))
        if pending is not None:
            out.append(ValueDoc(path, _lookup(values, path), " ".join(pending)))
            pending = None
    return out


def leaf_paths(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Paths of the values that are not maps with keys (scalars, lists, empty maps)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaf_paths(value, path + ".")
        else:
            yield path


def _default(value: Any) -> str:
    if value == "":
        return '`""`'
    rendered = json.dumps(value, separators=(", ", ": "))
    return f"`{rendered}`"


def values_table() -> str:
    rows = ["| value | default | meaning |", "|---|---|---|"]
    for d in value_docs():
        meaning = d.text.replace("|", "\\|")
        rows.append(f"| `{d.path}` | {_default(d.default)} | {meaning} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(values_table(), end="")
