"""Where this machine gets its packages from, so that image builds use the same places: the
Debian mirror and suite from apt's sources (for debootstrap), and the Python package index from
pip's configuration (for ``pip`` inside the builds). Nothing here names a host of its own.

Parsers are pure (tested with sample files); ``host_*`` functions read the machine.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
OS_RELEASE = Path("/etc/os-release")


class SourcesError(RuntimeError):
    """The machine's package sources could not be read; the message says what to fix."""


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_deb822(text: str) -> list[AptSource]:
    """``deb`` stanzas of a ``.sources`` file (``Types: deb``, ``URIs``, ``Suites``,
    ``Components``; ``Enabled: no`` skips a stanza)."""
    out: list[AptSource] = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line[0].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() in ("no", "false", "0"):
            continue
        for uri in fields.get("uris", "").split():
            out.append(
                AptSource(
                    uri=uri,
                    suites=tuple(fields.get("suites", "").split()),
                    components=tuple(fields.get("components", "").split()),
                )
            )
    return out


def parse_one_line(text: str) -> list[AptSource]:
    """``deb`` lines of a ``sources.list`` file (options in brackets are skipped)."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line[4:])
        parts = line.split()
        if len(parts) >= 2:
            out.append(AptSource(parts[0], (parts[1],), tuple(parts[2:])))
    return out


def debian_mirror(sources: Iterable[AptSource], suite: str) -> str:
    """The mirror that carries ``suite`` itself (not ``-updates`` or ``-security``), with
    ``main``: what debootstrap needs."""
    for s in sources:
        if suite in s.suites and (not s.components or "main" in s.components):
            return s.uri.rstrip("/")
    raise SourcesError(
        f"no apt source carries the Debian suite {suite!r} with component main; "
        f"checked {APT_SOURCES} and {APT_SOURCES_DIR}/"
    )


def os_codename(os_release: str) -> str | None:
    """``VERSION_CODENAME`` of an ``/etc/os-release`` text (``bookworm``)."""
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION_CODENAME":
            return value.strip().strip("\"'") or None
    return None


@dataclass(frozen=True)
class DebianSource:
    mirror: str
    suite: str


def host_debian_source() -> DebianSource:
    """The Debian mirror and suite this machine's apt uses."""
    try:
        codename = os_codename(OS_RELEASE.read_text())
    except OSError as e:
        raise SourcesError(f"cannot read {OS_RELEASE}: {e}") from e
    if not codename:
        raise SourcesError(f"{OS_RELEASE} names no VERSION_CODENAME; is this Debian?")
    sources: list[AptSource] = []
    if APT_SOURCES.is_file():
        sources += parse_one_line(APT_SOURCES.read_text())
    if APT_SOURCES_DIR.is_dir():
        for f in sorted(APT_SOURCES_DIR.iterdir()):
            if f.suffix == ".sources":
                sources += parse_deb822(f.read_text())
            elif f.suffix == ".list":
                sources += parse_one_line(f.read_text())
    return DebianSource(debian_mirror(sources, codename), codename)


# ---- pip ----------------------------------------------------------------------------------------

_CONFIG_LINE = re.compile(r"^(?P<section>[^.]*)\.(?P<key>[\w-]+)=(?P<value>.*)$")


@dataclass(frozen=True)
class PipIndex:
    """The package-index settings of this machine's pip that a build container needs.

    Local paths (``file://`` indexes, find-links directories, the CA bundle) are bind-mounted
    into the build at the same path, so the container sees what this machine's pip sees."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] = ()
    cert: str | None = None
    mounts: tuple[str, ...] = field(default=())

    def pip_conf(self) -> str:
        """A ``pip.conf`` carrying these settings (empty options are left out)."""
        lines = ["[global]"]
        if self.index_url:
            lines.append(f"index-url = {self.index_url}")
        if self.extra_index_urls:
            lines.append(f"extra-index-url = {' '.join(self.extra_index_urls)}")
        if self.find_links:
            lines.append(f"find-links = {' '.join(self.find_links)}")
        if self.trusted_hosts:
            lines.append(f"trusted-host = {' '.join(self.trusted_hosts)}")
        if self.cert:
            lines.append(f"cert = {self.cert}")
        return "\n".join(lines) + "\n"


def _unquote(value: str) -> str:
    value = value.strip()
    try:
        parts = shlex.split(value)
    except ValueError:
        return value
    return parts[0] if len(parts) == 1 else value


def parse_pip_config(listing: str) -> dict[str, str]:
    """``pip config list`` output as option -> value; sections ``global``, ``install``,
    ``download`` and the environment (``:env:``) count, later lines overriding earlier ones
    (pip lists files in increasing precedence, the environment last)."""
    out: dict[str, str] = {}
    for line in listing.splitlines():
        m = _CONFIG_LINE.match(line.strip())
        if not m or m.group("section") not in ("global", "install", "download", ":env:"):
            continue
        out[m.group("key")] = _unquote(m.group("value"))
    return out


def _local_path(location: str) -> str | None:
    if location.startswith("file://"):
        return urlparse(location).path
    if "://" not in location:
        return location
    return None


def pip_index(config: Mapping[str, str], exists: Mapping[str, bool]) -> PipIndex:
    """The settings of ``config`` (from :func:`parse_pip_config`) that say where packages come
    from. ``exists`` tells which local paths are present on this machine: missing ones are left
    out (pip itself ignores them), present ones become mounts."""
    mounts: list[str] = []

    def keep(location: str, index: bool = False) -> bool:
        path = _local_path(location)
        if path is None:
            return True
        if exists.get(path, False):
            # A local index's pages link to files next to it (`../files/...`): mount the
            # folder that holds both.
            mounts.append(str(PurePosixPath(path).parent) if index else path)
            return True
        return False

    def many(key: str, index: bool = False) -> tuple[str, ...]:
        return tuple(v for v in config.get(key, "").split() if keep(v, index))

    index = config.get("index-url") or None
    if index is not None and not keep(index, index=True):
        index = None
    extra = many("extra-index-url", index=True)
    links = many("find-links")
    cert = config.get("cert") or None
    if cert is not None and not keep(cert):
        cert = None
    return PipIndex(
        index_url=index,
        extra_index_urls=extra,
        find_links=links,
        trusted_hosts=tuple(config.get("trusted-host", "").split()),
        cert=cert,
        mounts=tuple(dict.fromkeys(mounts)),
    )


def local_paths(config: Mapping[str, str]) -> list[str]:
    keys = ("index-url", "extra-index-url", "find-links", "cert")
    found = []
    for key in keys:
        for value in config.get(key, "").split():
            path = _local_path(value)
            if path is not None:
                found.append(path)
    return found


def host_pip_index(python: str | None = None) -> PipIndex:
    """This machine's pip settings (``python -m pip config list``; the environment's
    ``PIP_*`` variables are part of its answer)."""
    proc = subprocess.run(
        [python or sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise SourcesError(f"`pip config list` failed: {proc.stderr.strip()}")
    config = parse_pip_config(proc.stdout)
    return pip_index(config, {p: os.path.exists(p) for p in local_paths(config)})


def mount_args(paths: Sequence[str]) -> list[str]:
    """``buildah bud`` options mounting local paths read-only at the same place."""
    return [arg for p in paths for arg in ("--volume", f"{p}:{p}:ro")]
