"""Shared pytest setup. Fixture modules live in tests/support/fixtures_*.py and load here."""

import pkgutil

import support

pytest_plugins = sorted(
    f"support.{m.name}"
    for m in pkgutil.iter_modules(support.__path__)
    if m.name.startswith("fixtures_")
)
