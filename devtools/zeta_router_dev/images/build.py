"""Container images built on this machine, with no registry and no Docker engine: buildah on a
Debian base made with debootstrap from the machine's own Debian mirror, Python packages from the
package index its pip is configured for.

- ``base``: Debian (this machine's suite) with python3, pip, CA certificates and libgomp1; the
  ``FROM`` of the two images below (the Dockerfile's ``PYTHON_IMAGE`` build argument). Kept only
  in buildah's storage.
- ``zeta-router``: the project's image from its ``Dockerfile``, ``zeta-router:<version>``.
- ``llamacpp``: the CPU model server ``zeta-router-llamacpp:<version>``: llama.cpp's server from
  ``xllamacpp`` (the version installed here) serving SmolLM2-135M-Instruct at
  :data:`LLAMACPP_MODEL`, started with llama-server's arguments (``llama_server.py``).
- ``pause``: the pod sandbox program, ``gcc -static`` of the ``pause.c`` that
  ``scripts/build-control-plane.sh`` keeps from the kubernetes source.

Every image is named by a content hash of its inputs and rebuilt only when that changes; the
built images are kept as docker-archive files under ``<cache>/images/archives``, from which
:func:`load_images` imports them into a node's containerd (``ctr images import``).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from zeta_router import __version__
from zeta_router_dev.cluster.binaries import K8S_VERSION, cache_root, k8s_bin_dir
from zeta_router_dev.images import inputs, sources
from zeta_router_dev.images.sources import DebianSource, PipIndex

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

PROJECT_IMAGE: Final = f"zeta-router:{__version__}"
LLAMACPP_IMAGE: Final = f"zeta-router-llamacpp:{__version__}"
PAUSE_IMAGE: Final = f"localhost/zeta-router-pause:{K8S_VERSION}"
BASE_REPO: Final = "localhost/zeta-router-base"
LLAMACPP_MODEL: Final = "/models/smollm2-135m-instruct.gguf"
"""Where the model file lies in the llamacpp image: what a tier names as its ``model``."""

BASE_PACKAGES: Final = ("python3", "python3-pip", "ca-certificates", "libgomp1")
# Bump when the way an image is made changes in a way its other inputs do not show.
RECIPE: Final = "1"
IMAGE_NAMES: Final = ("pause", "zeta-router", "llamacpp")
"""The images a node gets (the base is built on the way when needed)."""

BuildLog = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """An image could not be built or loaded; the message says which, why and what to do."""


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str
    """The name pods use (``zeta-router:0.1.0``)."""
    digest: str
    """Content hash of the inputs."""
    archive: str
    seconds: float
    cached: bool

    @property
    def containerd_ref(self) -> str:
        return containerd_ref(self.ref)


def containerd_ref(ref: str) -> str:
    """The fully qualified name containerd (and the kubelet) use for an image reference:
    ``zeta-router:0.1.0`` -> ``docker.io/library/zeta-router:0.1.0``."""
    first, sep, _ = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return ref
    if not sep:
        return f"docker.io/library/{ref}"
    return f"docker.io/{ref}"


def images_dir() -> Path:
    return cache_root() / "images"


# ---- tools ------------------------------------------------------------------------------------


def missing_tools() -> list[str]:
    """What the builds need and this machine lacks, each with the way to get it."""
    out = []
    for tool, package in (("buildah", "buildah"), ("debootstrap", "debootstrap"), ("gcc", "gcc")):
        if shutil.which(tool) is None:
            out.append(f"{tool} (Debian package {package})")
    if not Path("/usr/lib/x86_64-linux-gnu/libc.a").exists() and not list(
        Path("/usr/lib").glob("*/libc.a")
    ):
        out.append("a static C library for the pause program (Debian package libc6-dev)")
    return out


def check_tools() -> None:
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building images needs root (debootstrap and buildah write root-owned files); "
            "run `make images` as root"
        )
    missing = missing_tools()
    if missing:
        raise ImageBuildError(
            "cannot build images, missing: "
            + "; ".join(missing)
            + ". Install the system packages with `make system-deps` "
            "(scripts/install-system-deps.sh)"
        )


class Buildah:
    """buildah with its storage under ``root`` (never the machine-wide store), every command's
    output appended to ``log``."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log = log

    def argv(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            "overlay",
            *args,
        ]

    def __call__(self, *args: str, what: str, timeout: float = 3600) -> str:
        return run_logged(self.argv(*args), self.log, what, timeout)

    def has_image(self, ref: str) -> bool:
        proc = subprocess.run(
            self.argv("inspect", "--type", "image", ref),
            capture_output=True,
            check=False,
            timeout=120,
        )
        return proc.returncode == 0

    def image_names(self) -> list[str]:
        out = run_logged(
            self.argv("images", "--format", "{{.Name}}:{{.Tag}}"), self.log, "listing images"
        )
        return [line.strip() for line in out.splitlines() if line.strip()]


def run_logged(
    argv: Sequence[str],
    log: Path,
    what: str,
    timeout: float = 3600,
    env: dict[str, str] | None = None,
) -> str:
    """Run ``argv``, append its output to ``log``; stdout on success, else an
    :class:`ImageBuildError` naming ``what`` with the end of the output."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(argv)}\n")
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as e:
        raise ImageBuildError(f"{what}: timed out after {timeout:g}s; log {log}") from e
    with log.open("a") as f:
        f.write(proc.stdout)
        f.write(proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return proc.stdout


# ---- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    debian: DebianSource
    pip: PipIndex
    pause_c: Path
    model: Path
    xllamacpp_version: str


def gather_inputs() -> Inputs:
    """The machine's sources and the files the images are made from; a missing one is an
    :class:`ImageBuildError` saying how to get it."""
    pause_c = k8s_bin_dir() / "src" / "pause.c"
    if not pause_c.is_file():
        raise ImageBuildError(
            f"{pause_c} not found: it comes with the kubernetes build, run `make control-plane` "
            "(scripts/build-control-plane.sh)"
        )
    from zeta_router_dev.local.llama import LlamaServerError, model_path

    try:
        model = model_path()
    except LlamaServerError as e:
        raise ImageBuildError(f"the model for the llamacpp image: {e}") from e
    try:
        xllamacpp_version = importlib.metadata.version("xllamacpp")
    except importlib.metadata.PackageNotFoundError as e:
        raise ImageBuildError(
            "xllamacpp is not installed in this environment (its version is the one the image "
            "gets); run `make venv`"
        ) from e
    try:
        debian = sources.host_debian_source()
        pip = sources.host_pip_index()
    except sources.SourcesError as e:
        raise ImageBuildError(str(e)) from e
    return Inputs(debian, pip, pause_c, model, xllamacpp_version)


def base_digest(src: Inputs) -> str:
    return inputs.digest(
        {
            "recipe": RECIPE,
            "mirror": src.debian.mirror,
            "suite": src.debian.suite,
            "packages": " ".join(BASE_PACKAGES),
        }
    )


def pause_digest(src: Inputs, gcc_version: str) -> str:
    return inputs.digest(
        {"recipe": RECIPE, "pause.c": src.pause_c.read_bytes(), "gcc": gcc_version}
    )


def project_digest(src: Inputs, base: str, repo: Path = REPO) -> str:
    parts: dict[str, str | bytes] = dict(inputs.dockerfile_inputs(repo, repo / "Dockerfile"))
    parts.update({"recipe": RECIPE, "base": base, "pip.conf": src.pip.pip_conf()})
    return inputs.digest(parts)


def llamacpp_digest(src: Inputs, base: str, model_sha: str) -> str:
    return inputs.digest(
        {
            "recipe": RECIPE,
            "base": base,
            "containerfile": (HERE / "Containerfile.llamacpp").read_bytes(),
            "llama_server.py": (HERE / "llama_server.py").read_bytes(),
            "model": model_sha,
            "xllamacpp": src.xllamacpp_version,
            "pip.conf": src.pip.pip_conf(),
        }
    )


# ---- the builder ------------------------------------------------------------------------------


@dataclass
class IndexEntry:
    digest: str
    ref: str
    archive: str
    seconds: float
    built_at: float


class ImageBuilder:
    """Builds (or finds cached) images under ``root`` (default ``<cache>/images``)."""

    def __init__(self, root: Path | None = None, log: BuildLog | None = None) -> None:
        self.root = (root or images_dir()).resolve()
        self.say: BuildLog = log or (lambda _m: None)
        self.log_path = self.root / "logs" / "build.log"
        self.buildah = Buildah(self.root, self.log_path)
        self._model_sha: str | None = None

    # -- cache index ------------------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        return self.root / "images.json"

    def index(self) -> dict[str, IndexEntry]:
        try:
            data = json.loads(self.index_path.read_text())
        except (OSError, ValueError):
            return {}
        out = {}
        for name, entry in data.items():
            with contextlib.suppress(TypeError, KeyError):
                out[name] = IndexEntry(**entry)
        return out

    def _record(self, name: str, entry: IndexEntry) -> None:
        data = {k: asdict(v) for k, v in self.index().items()}
        data[name] = asdict(entry)
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.index_path)

    def cached(self, name: str, digest: str) -> IndexEntry | None:
        entry = self.index().get(name)
        if entry is None or entry.digest != digest:
            return None
        if name == "base":
            return entry if self.buildah.has_image(entry.ref) else None
        return entry if Path(entry.archive).is_file() else None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One build at a time per cache (two `make images` share archives and the index)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- entry point ------------------------------------------------------------------------

    def build(self, names: Sequence[str] = IMAGE_NAMES, force: bool = False) -> list[BuiltImage]:
        """Build what is missing or out of date among ``names``; cached ones are returned as they
        are (``force`` rebuilds them all, the base included)."""
        unknown = sorted(set(names) - set(IMAGE_NAMES))
        if unknown:
            raise ImageBuildError(
                f"unknown image {', '.join(unknown)}; known: {', '.join(IMAGE_NAMES)}"
            )
        src = gather_inputs()
        check_tools()
        with self.locked(), machine_left_as_it_was(self.say):
            for d in ("archives", "logs", "run"):
                (self.root / d).mkdir(parents=True, exist_ok=True)
            out: list[BuiltImage] = []
            base: BuiltImage | None = None
            for name in IMAGE_NAMES:
                if name not in names:
                    continue
                if name == "pause":
                    out.append(self._pause(src, force))
                    continue
                if base is None:
                    base = self._base(src, force)
                if name == "zeta-router":
                    out.append(self._project(src, base, force))
                else:
                    out.append(self._llamacpp(src, base, force))
            return out

    def _done(self, name: str, ref: str, digest: str, archive: Path, t0: float) -> BuiltImage:
        seconds = time.monotonic() - t0
        self._record(name, IndexEntry(digest, ref, str(archive), seconds, time.time()))
        self.say(f"{name}: built {ref} in {seconds:.0f}s")
        return BuiltImage(name, ref, digest, str(archive), seconds, cached=False)

    def _from_cache(self, name: str, entry: IndexEntry) -> BuiltImage:
        self.say(f"{name}: {entry.ref} is up to date (inputs {entry.digest[:12]})")
        return BuiltImage(name, entry.ref, entry.digest, entry.archive, 0.0, cached=True)

    def _archive(self, local_ref: str, name: str, ref: str, digest: str) -> Path:
        archive = self.root / "archives" / f"{name}-{digest[:16]}.tar"
        tmp = archive.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        self.buildah("push", local_ref, f"docker-archive:{tmp}:{ref}", what=f"exporting {ref}")
        tmp.replace(archive)
        for old in (self.root / "archives").glob(f"{name}-*.tar"):
            if old != archive:
                old.unlink(missing_ok=True)
        return archive

    # -- base ---------------------------------------------------------------------------------

    def _base(self, src: Inputs, force: bool) -> BuiltImage:
        digest = base_digest(src)
        entry = None if force else self.cached("base", digest)
        if entry is not None:
            return self._from_cache("base", entry)
        t0 = time.monotonic()
        ref = f"{BASE_REPO}:{digest[:16]}"
        self.say(
            f"base: debootstrap {src.debian.suite} from {src.debian.mirror} "
            f"({', '.join(BASE_PACKAGES)}), about 2 minutes"
        )
        rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=self.root / "run"))
        try:
            run_logged(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    "--components=main",
                    src.debian.suite,
                    str(rootfs),
                    src.debian.mirror,
                ],
                self.log_path,
                f"debootstrap of Debian {src.debian.suite} from {src.debian.mirror}",
                timeout=1800,
            )
            slim_rootfs(rootfs)
            container = self.buildah("from", "scratch", what="buildah from scratch").strip()
            try:
                self.buildah("copy", container, f"{rootfs}/", "/", what="copying the base rootfs")
                self.buildah(
                    "config",
                    "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env", "LANG=C.UTF-8",
                    "--env", "PYTHONUNBUFFERED=1",
                    "--cmd", "python3",
                    container,
                    what="configuring the base image",
                )  # fmt: skip
                self.buildah("commit", "--rm", container, ref, what="committing the base image")
            except BaseException:
                self.buildah("rm", container, what="removing the base container")
                raise
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)
        for old in self.buildah.image_names():
            if old.startswith(BASE_REPO + ":") and old != ref:
                with contextlib.suppress(ImageBuildError):
                    self.buildah("rmi", old, what=f"removing the old base {old}")
        seconds = time.monotonic() - t0
        self._record("base", IndexEntry(digest, ref, "", seconds, time.time()))
        self.say(f"base: built {ref} in {seconds:.0f}s")
        return BuiltImage("base", ref, digest, "", seconds, cached=False)

    # -- pause --------------------------------------------------------------------------------

    def _pause(self, src: Inputs, force: bool) -> BuiltImage:
        gcc = run_logged(["gcc", "--version"], self.log_path, "gcc --version").splitlines()[0]
        digest = pause_digest(src, gcc)
        entry = None if force else self.cached("pause", digest)
        if entry is not None:
            return self._from_cache("pause", entry)
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="pause-", dir=self.root / "run"))
        try:
            binary = work / "pause"
            run_logged(
                [
                    "gcc", "-Os", "-Wall", "-Werror", "-static",
                    f"-DVERSION=v{K8S_VERSION}-zeta", "-o", str(binary), str(src.pause_c),
                ],
                self.log_path,
                f"compiling {src.pause_c} (gcc -static)",
            )  # fmt: skip
            run_logged(["strip", str(binary)], self.log_path, "strip pause")
            container = self.buildah("from", "scratch", what="buildah from scratch").strip()
            try:
                self.buildah("copy", container, str(binary), "/pause", what="copying pause")
                self.buildah(
                    "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", container,
                    what="configuring the pause image",
                )  # fmt: skip
                self.buildah("commit", "--rm", container, PAUSE_IMAGE, what="committing pause")
            except BaseException:
                self.buildah("rm", container, what="removing the pause container")
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        archive = self._archive(PAUSE_IMAGE, "pause", PAUSE_IMAGE, digest)
        return self._done("pause", PAUSE_IMAGE, digest, archive, t0)

    # -- images from a Dockerfile -------------------------------------------------------------

    def _bud(
        self,
        src: Inputs,
        context: Path,
        dockerfile: Path,
        build_args: dict[str, str],
        local_ref: str,
        what: str,
    ) -> None:
        conf = self.root / "run" / "pip.conf"
        conf.write_text(src.pip.pip_conf())
        argv = [
            "bud",
            "--isolation", "chroot",
            "--network", "host",
            "--pull=never",
            "--format", "docker",
            "--volume", f"{conf}:/etc/pip.conf:ro",
            *sources.mount_args(src.pip.mounts),
            "--file", str(dockerfile),
            "--tag", local_ref,
        ]  # fmt: skip
        for key, value in build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        self.buildah(*argv, str(context), what=what)

    def _project(self, src: Inputs, base: BuiltImage, force: bool) -> BuiltImage:
        digest = project_digest(src, base.digest)
        entry = None if force else self.cached("zeta-router", digest)
        if entry is not None:
            return self._from_cache("zeta-router", entry)
        t0 = time.monotonic()
        self.say(f"zeta-router: building {PROJECT_IMAGE} from the Dockerfile on {base.ref}")
        local = f"localhost/{PROJECT_IMAGE}"
        self._bud(
            src,
            REPO,
            REPO / "Dockerfile",
            {"PYTHON_IMAGE": base.ref},
            local,
            f"building {PROJECT_IMAGE} from {REPO / 'Dockerfile'}",
        )
        archive = self._archive(local, "zeta-router", PROJECT_IMAGE, digest)
        with contextlib.suppress(ImageBuildError):
            self.buildah("rmi", local, what=f"removing {local} (kept as {archive})")
        return self._done("zeta-router", PROJECT_IMAGE, digest, archive, t0)

    def _llamacpp(self, src: Inputs, base: BuiltImage, force: bool) -> BuiltImage:
        if self._model_sha is None:
            self._model_sha = inputs.file_digest(src.model)
        digest = llamacpp_digest(src, base.digest, self._model_sha)
        entry = None if force else self.cached("llamacpp", digest)
        if entry is not None:
            return self._from_cache("llamacpp", entry)
        t0 = time.monotonic()
        self.say(
            f"llamacpp: building {LLAMACPP_IMAGE} (xllamacpp {src.xllamacpp_version}, "
            f"{src.model.name} at {LLAMACPP_MODEL})"
        )
        context = Path(tempfile.mkdtemp(prefix="llamacpp-", dir=self.root / "run"))
        try:
            shutil.copy2(HERE / "llama_server.py", context / "llama_server.py")
            target = context / Path(LLAMACPP_MODEL).name
            try:
                os.link(src.model, target)
            except OSError:
                shutil.copy2(src.model, target)
            local = f"localhost/{LLAMACPP_IMAGE}"
            self._bud(
                src,
                context,
                HERE / "Containerfile.llamacpp",
                {"BASE": base.ref, "XLLAMACPP_VERSION": src.xllamacpp_version},
                local,
                f"building {LLAMACPP_IMAGE}",
            )
        finally:
            shutil.rmtree(context, ignore_errors=True)
        archive = self._archive(local, "llamacpp", LLAMACPP_IMAGE, digest)
        with contextlib.suppress(ImageBuildError):
            self.buildah("rmi", local, what=f"removing {local} (kept as {archive})")
        return self._done("llamacpp", LLAMACPP_IMAGE, digest, archive, t0)


# What buildah creates on the machine whatever its --root says: its CNI configuration folder
# (/etc/cni/net.d/cni.lock, even with --network host) and containers/image's blob-info cache.
BUILDAH_SIDE_EFFECTS: Final = ("/etc/cni", "/var/lib/containers")


@contextlib.contextmanager
def machine_left_as_it_was(say: BuildLog) -> Iterator[None]:
    """Remove what a build created outside the image cache (only what was not there before)."""
    from zeta_router_dev.cluster.hostchanges import remove_new_entries, tree

    before = {p: tree(Path(p)) for p in BUILDAH_SIDE_EFFECTS}
    try:
        yield
    finally:
        for path, entries in before.items():
            remove_new_entries(path, entries, say)


def slim_rootfs(rootfs: Path) -> None:
    """Drop what an image does not need from a debootstrap tree (apt lists and caches, docs,
    man pages, locales), let pip install into it as into an official Python image, and give it
    a ``python`` command."""
    for rel in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        path = rootfs / rel
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    for pattern in ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb"):
        for path in rootfs.glob(pattern):
            path.unlink()
    # Debian marks its Python "externally managed" (PEP 668); an image's Python is ours.
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    python = rootfs / "usr" / "bin" / "python"
    if not python.exists() and not python.is_symlink():
        python.symlink_to("python3")


# ---- loading into a node ----------------------------------------------------------------------


def load_images(
    address: str, images: Sequence[BuiltImage], log: Path, namespace: str = "k8s.io"
) -> None:
    """Import the images' archives into the containerd at ``address`` and check that each is
    there under the name pods use."""
    for image in images:
        if not image.archive or not Path(image.archive).is_file():
            raise ImageBuildError(
                f"image {image.ref}: archive {image.archive or '(none)'} is missing; "
                "run `make images`"
            )
        run_logged(
            ["ctr", "--address", address, "--namespace", namespace, "images", "import",
             image.archive],
            log,
            f"importing {image.ref} into containerd ({address})",
            timeout=600,
        )  # fmt: skip
    present = set(loaded_images(address, log, namespace))
    missing = [i.containerd_ref for i in images if i.containerd_ref not in present]
    if missing:
        raise ImageBuildError(
            f"images not loaded into containerd ({address}): {', '.join(missing)}; "
            f"see {log}. Rebuild with `zeta-router images build --force`"
        )


def loaded_images(address: str, log: Path, namespace: str = "k8s.io") -> list[str]:
    out = run_logged(
        ["ctr", "--address", address, "--namespace", namespace, "images", "ls", "-q"],
        log,
        "listing containerd's images",
    )
    return [line.strip() for line in out.splitlines() if line.strip()]
