"""What an image is made of, as a content hash: an image is rebuilt only when the hash of its
inputs changes (pure functions, plus :func:`hash_tree`, which reads files).

For an image built from a Dockerfile the inputs are the Dockerfile, its ``.dockerignore`` and the
files its ``COPY``/``ADD`` instructions take from the build context, minus what
``.dockerignore`` leaves out (so compiled ``__pycache__`` files never trigger a rebuild).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath


def logical_lines(dockerfile: str) -> list[str]:
    """Instructions of a Dockerfile with continuation lines joined and comments dropped."""
    out: list[str] = []
    buf = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append(buf + line)
        buf = ""
    if buf:
        out.append(buf)
    return out


def copy_sources(dockerfile: str) -> list[str]:
    """Context paths that ``COPY``/``ADD`` instructions read (``--from=`` copies read another
    stage, not the context, and are left out)."""
    sources: list[str] = []
    for line in logical_lines(dockerfile):
        keyword, _, rest = line.partition(" ")
        if keyword.upper() not in ("COPY", "ADD"):
            continue
        words = rest.split()
        if any(w.startswith("--from=") for w in words):
            continue
        args = [w for w in words if not w.startswith("--")]
        if rest.lstrip().startswith("["):
            args = [str(a) for a in json.loads(rest[rest.index("[") :])]
        sources.extend(a.rstrip("/") or "." for a in args[:-1])
    return sources


def ignore_patterns(dockerignore: str) -> list[str]:
    return [
        line.strip()
        for line in dockerignore.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def ignored(path: str, patterns: Iterable[str]) -> bool:
    """Whether ``.dockerignore`` patterns exclude ``path`` (relative, ``/``-separated). A pattern
    excludes a path it matches and everything under it; ``**`` matches any number of folders;
    a later ``!pattern`` brings paths back."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])
        hit = any(
            fnmatch.fnmatchcase(prefix, p) or _match_globstar(prefix, p)
            for prefix in prefixes
            for p in candidates
        )
        if hit:
            result = not negate
    return result


def _match_globstar(path: str, pattern: str) -> bool:
    if "**/" not in pattern:
        return False
    head, _, tail = pattern.partition("**/")
    if not path.startswith(head):
        return False
    rest = path[len(head) :].split("/")
    return any(fnmatch.fnmatchcase("/".join(rest[i:]), tail) for i in range(len(rest)))


def context_files(root: Path, sources: Iterable[str], patterns: list[str]) -> list[str]:
    """Files under ``root`` named by ``sources`` (files or folders), minus ignored ones, sorted,
    as paths relative to ``root``."""
    found: set[str] = set()
    for src in sources:
        base = root / src
        candidates = [base] if base.is_file() else sorted(base.rglob("*"))
        for path in candidates:
            if not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            if not ignored(rel, patterns):
                found.add(rel)
    return sorted(found)


def digest(parts: Mapping[str, str | bytes]) -> str:
    """A sha256 over named parts, independent of their order in the mapping."""
    h = hashlib.sha256()
    for key in sorted(parts):
        value = parts[key]
        data = value.encode() if isinstance(value, str) else value
        h.update(key.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_tree(root: Path, files: Iterable[str]) -> dict[str, str]:
    """``{relative path: sha256 of its content}`` for each file."""
    return {rel: file_digest(root / rel) for rel in files}


def dockerfile_inputs(root: Path, dockerfile: Path) -> dict[str, str]:
    """The inputs of an image built from ``dockerfile`` with ``root`` as context."""
    text = dockerfile.read_text()
    ignore_file = root / ".dockerignore"
    ignore_text = ignore_file.read_text() if ignore_file.is_file() else ""
    files = context_files(root, copy_sources(text), ignore_patterns(ignore_text))
    parts = {f"file:{k}": v for k, v in hash_tree(root, files).items()}
    parts["dockerfile"] = hashlib.sha256(text.encode()).hexdigest()
    parts["dockerignore"] = hashlib.sha256(ignore_text.encode()).hexdigest()
    return parts
