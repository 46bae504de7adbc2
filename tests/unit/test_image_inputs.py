"""Images are rebuilt only when their inputs change: the files a Dockerfile copies (minus what
.dockerignore leaves out), the Dockerfile itself, and the names containerd gives images."""

from __future__ import annotations

from pathlib import Path

from zeta_router_dev.images.build import BuiltImage, containerd_ref, project_digest
from zeta_router_dev.images.inputs import (
    context_files,
    copy_sources,
    digest,
    dockerfile_inputs,
    ignore_patterns,
    ignored,
)

DOCKERFILE = """\
ARG BASE=python:3.11
FROM ${BASE} AS builder
COPY pyproject.toml README.md ./
COPY --chown=1:1 operator/ \\
     operator/
RUN pip wheel .
FROM ${BASE}
COPY --from=builder /wheels /wheels
COPY ["data/a b.txt", "/data/"]
"""


def test_copy_sources() -> None:
    assert copy_sources(DOCKERFILE) == ["pyproject.toml", "README.md", "operator", "data/a b.txt"]


def test_dockerignore_matching() -> None:
    patterns = ignore_patterns("# c\n.git\n**/__pycache__\n*.egg-info\ntests\n!tests/keep\n")
    assert ignored("operator/x/__pycache__/m.pyc", patterns)
    assert ignored("__pycache__/m.pyc", patterns)
    assert ignored("zeta.egg-info/PKG-INFO", patterns)
    assert ignored("tests/unit/t.py", patterns)
    assert not ignored("tests/keep", patterns)
    assert not ignored("operator/zeta_router/kube.py", patterns)


def make_context(root: Path) -> Path:
    (root / "operator" / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "operator" / "pkg" / "m.py").write_text("x = 1\n")
    (root / "operator" / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"\0")
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "README.md").write_text("readme\n")
    (root / "tests").mkdir()
    (root / "tests" / "t.py").write_text("t\n")
    (root / ".dockerignore").write_text("**/__pycache__\n")
    dockerfile = root / "Dockerfile"
    dockerfile.write_text("FROM x\nCOPY pyproject.toml README.md ./\nCOPY operator/ operator/\n")
    return dockerfile


def test_inputs_change_with_copied_files_only(tmp_path: Path) -> None:
    dockerfile = make_context(tmp_path)
    files = context_files(tmp_path, ["operator", "README.md"], ["**/__pycache__"])
    assert files == ["README.md", "operator/pkg/m.py"]
    first = digest(dockerfile_inputs(tmp_path, dockerfile))
    # Compiled files and files the Dockerfile does not copy change nothing.
    (tmp_path / "operator" / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"\1")
    (tmp_path / "tests" / "t.py").write_text("changed\n")
    assert digest(dockerfile_inputs(tmp_path, dockerfile)) == first
    # A source file, the Dockerfile or .dockerignore does.
    (tmp_path / "operator" / "pkg" / "m.py").write_text("x = 2\n")
    second = digest(dockerfile_inputs(tmp_path, dockerfile))
    assert second != first
    (tmp_path / ".dockerignore").write_text("**/__pycache__\n*.md\n")
    assert digest(dockerfile_inputs(tmp_path, dockerfile)) != second


def test_digest_is_independent_of_order_and_tells_parts_apart() -> None:
    assert digest({"a": "1", "b": "2"}) == digest({"b": "2", "a": "1"})
    assert digest({"a": "12"}) != digest({"a": "1", "b": "2"})
    assert digest({"ab": "c"}) != digest({"a": "bc"})


def test_the_project_image_depends_on_its_base(tmp_path: Path) -> None:
    from zeta_router_dev.images.build import Inputs
    from zeta_router_dev.images.sources import DebianSource, PipIndex

    make_context(tmp_path)
    src = Inputs(DebianSource("http://m/", "bookworm"), PipIndex(), tmp_path, tmp_path, "1")
    assert project_digest(src, "base-1", tmp_path) != project_digest(src, "base-2", tmp_path)
    other_pip = Inputs(src.debian, PipIndex(index_url="https://i/simple"), tmp_path, tmp_path, "1")
    assert project_digest(src, "b", tmp_path) != project_digest(other_pip, "b", tmp_path)


def test_containerd_names() -> None:
    assert containerd_ref("zeta-router:0.1.0") == "docker.io/library/zeta-router:0.1.0"
    assert containerd_ref("team/app:1") == "docker.io/team/app:1"
    assert containerd_ref("localhost/pause:1") == "localhost/pause:1"
    assert containerd_ref("ghcr.io/ggml-org/llama.cpp:server") == (
        "ghcr.io/ggml-org/llama.cpp:server"
    )
    assert containerd_ref("registry:5000/x:1") == "registry:5000/x:1"
    image = BuiltImage("zeta-router", "zeta-router:0.1.0", "d", "/a.tar", 1.0, False)
    assert image.containerd_ref == "docker.io/library/zeta-router:0.1.0"
