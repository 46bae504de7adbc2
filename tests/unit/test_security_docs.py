"""docs/security.md carries the pod policy's rules and the operator's RBAC as they are: its
tables are generated from ``api.pod_policy.RULES`` and ``tests/support/rbac.py`` (print them
with ``python tests/support/rbac.py``), and the install docs link it."""

from __future__ import annotations

from support import rbac
from support.cluster import REPO

DOC = REPO / "docs" / "security.md"


def test_the_rules_table_is_the_policys() -> None:
    assert rbac.rules_table() in DOC.read_text()


def test_the_rbac_tables_are_the_documented_list() -> None:
    text = DOC.read_text()
    assert rbac.grants_table(rbac.NAMESPACED) in text
    assert rbac.grants_table(rbac.CLUSTER_WIDE) in text


def test_install_docs_link_it_and_say_the_default_is_namespace_scoped() -> None:
    readme = (REPO / "README.md").read_text()
    install = readme.split("## Install on a real cluster", 1)[1].split("\n## ", 1)[0]
    assert "docs/security.md" in install
    assert "namespace-scoped" in install
    assert "security.md" in (REPO / "docs" / "install.md").read_text()
