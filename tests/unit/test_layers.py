"""The product package's layers import downward only, and never the development tooling.

Read from the source (every import statement, those inside functions included), not from what
happens to be imported at run time, so a lazy upward import is caught too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = REPO / "operator" / "zeta_router"

# What each part of zeta_router may import from the others. Bottom first: the scoring core and
# the version; the API on it; the renderers on the API; then the operator (controller, its
# control loop and its learner), the router sidecar, the quality and simulation tools; the command
# line on top.
ALLOWED: dict[str, set[str]] = {
    "(root)": set(),
    "plotting": set(),
    "scoring": set(),
    "kube": set(),
    "bounded_http": set(),
    "api": {"(root)", "scoring"},
    "render": {"(root)", "api", "scoring"},
    "controller": {"(root)", "api", "scoring", "render", "kube", "autoscale", "bounded_http"},
    "autoscale": {"(root)", "api", "scoring", "render", "kube", "controller", "bounded_http"},
    "learning": {"(root)", "api", "scoring", "render", "kube", "controller", "bounded_http"},
    "router": {"(root)", "api", "scoring"},
    "quality": {"(root)", "api", "scoring", "plotting"},
    "sim": {"(root)", "api", "scoring", "autoscale", "plotting"},
    "cli": {"(root)"},
    "__main__": {"cli"},
}

# Third-party packages a part must not pull in: the sidecar starts in every GPU pod and stays
# lean; the API is imported by everything.
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "router": {"kopf", "kubernetes", "prometheus_api_client", "matplotlib", "rich"},
    "scoring": {"kopf", "aiohttp", "matplotlib", "rich"},
    "api": {"kopf", "aiohttp", "matplotlib", "rich"},
}


def _part(path: Path) -> str:
    rel = path.relative_to(PRODUCT).parts
    if rel == ("__init__.py",):
        return "(root)"
    return rel[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, set[str]]]:
    internal: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    where: dict[str, set[str]] = defaultdict(set)
    for path in PRODUCT.rglob("*.py"):
        part = _part(path)
        for name in _imports(path):
            top, _, rest = name.partition(".")
            if top == "zeta_router":
                target = rest.split(".")[0] if rest else "(root)"
                if target != part:
                    internal[part].add(target)
                    where[f"{part}->{target}"].add(str(path.relative_to(REPO)))
            else:
                external[part].add(top)
                where[f"{part}->{top}"].add(str(path.relative_to(REPO)))
    return internal, external, where


def test_every_part_has_a_place_in_the_layers() -> None:
    parts = {_part(p) for p in PRODUCT.rglob("*.py")}
    assert parts <= set(ALLOWED), f"new parts need a layer in ALLOWED: {parts - set(ALLOWED)}"


def test_parts_import_only_what_is_below_them() -> None:
    internal, _, where = _graph()
    upward = {
        f"{part} imports {target} ({', '.join(sorted(where[f'{part}->{target}']))})"
        for part, targets in internal.items()
        for target in targets - ALLOWED[part]
    }
    assert not upward, "\n".join(sorted(upward))


def test_the_product_never_imports_the_development_tooling() -> None:
    _, external, where = _graph()
    offenders = [
        f"{part}: {', '.join(sorted(where[f'{part}->zeta_router_dev']))}"
        for part, tops in external.items()
        if "zeta_router_dev" in tops
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("part", sorted(FORBIDDEN_THIRD_PARTY))
def test_lean_parts_do_not_pull_heavy_packages(part: str) -> None:
    _, external, where = _graph()
    bad = external.get(part, set()) & FORBIDDEN_THIRD_PARTY[part]
    assert not bad, {b: sorted(where[f"{part}->{b}"]) for b in bad}


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The parser finds an import inside a function (the way a lazy upward import hides)."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from zeta_router.router.app import Router\n")
    assert _imports(module) == ["zeta_router.router.app"]
