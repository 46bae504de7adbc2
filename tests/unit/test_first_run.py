"""The first-run steps of the README's two commands, run cold on every test run.

A step that only a fresh machine takes hides behind a warm cache: the helm/kubectl fetch died of
SIGPIPE on its first run only, for months. So the cheap steps run here from empty caches, and the
expensive one (the kubernetes build) has the logic that decides what to build tested against
caches in every state.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
K8S_PROGRAMS = [
    "kube-apiserver",
    "kube-controller-manager",
    "kubelet",
    "kube-proxy",
    "kube-scheduler",
]


def _run(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)
    return path


# ---- helm and kubectl: cheap, so fetched cold every time ---------------------------------------


@pytest.mark.slow
def test_fetch_helm_kubectl_from_an_empty_cache(tmp_path: Path) -> None:
    import sys

    result = _run(
        [str(SCRIPTS / "fetch-helm-kubectl.sh")],
        {"ZETA_CACHE_DIR": str(tmp_path), "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for tool in ("helm", "kubectl"):
        path = tmp_path / "tools" / "bin" / tool
        assert path.is_file(), tool
        assert os.access(path, os.X_OK), tool
    assert "Client Version: v" in result.stdout
    # The second run finds them and does nothing.
    again = _run(
        [str(SCRIPTS / "fetch-helm-kubectl.sh")],
        {"ZETA_CACHE_DIR": str(tmp_path), "PYTHON": sys.executable},
    )
    assert again.returncode == 0
    assert "cached" in again.stdout


# ---- the kubernetes build: expensive, so its plan is what is tested -----------------------------


def _plan(cache: Path, extra_env: dict[str, str] | None = None) -> list[str]:
    env = {"ZETA_CACHE_DIR": str(cache), "ZETA_K8S_BIN_DIR": "", **(extra_env or {})}
    result = _run([str(SCRIPTS / "build-control-plane.sh"), "--plan"], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_build_plan_on_an_empty_cache_builds_everything(tmp_path: Path) -> None:
    assert _plan(tmp_path) == [*K8S_PROGRAMS, "pause.c"]


def test_build_plan_builds_only_what_is_missing(tmp_path: Path) -> None:
    out = tmp_path / "k8s-1.20.2"
    (out / "src").mkdir(parents=True)
    # A cache from before the node programs were added: only the control plane is there.
    for name in ("kube-apiserver", "kube-controller-manager"):
        _executable(out / name, "#!/bin/sh\n")
    assert _plan(tmp_path) == ["kubelet", "kube-proxy", "kube-scheduler", "pause.c"]
    # A file that is not executable does not count as built.
    (out / "kubelet").write_text("partial")
    assert "kubelet" in _plan(tmp_path)
    for name in K8S_PROGRAMS:
        _executable(out / name, "#!/bin/sh\n")
    (out / "src" / "pause.c").write_text("int main(void) { return 0; }\n")
    assert _plan(tmp_path) == []


def test_build_plan_follows_xdg_cache_home(tmp_path: Path) -> None:
    env = {"ZETA_CACHE_DIR": "", "XDG_CACHE_HOME": str(tmp_path), "ZETA_K8S_BIN_DIR": ""}
    result = _run([str(SCRIPTS / "build-control-plane.sh"), "--plan"], env)
    assert result.stdout.split() == [*K8S_PROGRAMS, "pause.c"]


def test_build_refuses_to_build_into_an_explicit_binary_dir(tmp_path: Path) -> None:
    result = _run(
        [str(SCRIPTS / "build-control-plane.sh")],
        {"ZETA_K8S_BIN_DIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "ZETA_K8S_BIN_DIR" in result.stderr
    assert "kubelet" in result.stderr
    assert not any(tmp_path.iterdir())


def test_build_script_rejects_unknown_arguments() -> None:
    result = _run([str(SCRIPTS / "build-control-plane.sh"), "--frobnicate"])
    assert result.returncode == 2
    assert "unknown argument" in result.stderr


# ---- the system packages: the detection runs for real, the installer against stand-ins --------


def test_system_deps_list_is_the_one_ci_and_make_use() -> None:
    listed = _run([str(SCRIPTS / "install-system-deps.sh"), "--list"]).stdout.split()
    for needed in ("etcd-server", "prometheus", "openssl", "libgomp1", "golang-go", "containerd"):
        assert needed in listed
    makefile = (REPO / "Makefile").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/install-system-deps.sh" in makefile
    assert "scripts/install-system-deps.sh" in ci
    # No second list of packages anywhere else.
    assert "apt-get install" not in ci
    assert "apt-get install" not in makefile
    assert "apt-get install" not in (SCRIPTS / "build-control-plane.sh").read_text()


def test_system_deps_are_all_installed_here() -> None:
    """This machine ran `make test`, whose first step installs them: none may be missing."""
    result = _run([str(SCRIPTS / "install-system-deps.sh"), "--check"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == []


def _fake_bin(tmp_path: Path, uid: int, installed: set[str], sudo: bool) -> Path:
    """A PATH with stand-ins for dpkg-query, id, apt-get (and sudo): the script's decisions are
    exercised without touching the machine's packages."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    _executable(
        bin_dir / "dpkg-query",
        "#!/bin/sh\n"
        "for pkg; do :; done\n"
        f'case " {" ".join(sorted(installed))} " in *" $pkg "*) printf installed;; '
        "*) exit 1;; esac\n",
    )
    _executable(bin_dir / "id", f"#!/bin/sh\necho {uid}\n")
    _executable(bin_dir / "apt-get", f'#!/bin/sh\necho "apt-get $*" >> {log}\n')
    _executable(bin_dir / "tee", f'#!/bin/sh\ncat > /dev/null; echo "tee $*" >> {log}\n')
    _executable(bin_dir / "chmod", f'#!/bin/sh\necho "chmod $*" >> {log}\n')
    _executable(bin_dir / "rm", f'#!/bin/sh\necho "rm $*" >> {log}\n')
    if sudo:
        _executable(
            bin_dir / "sudo", f'#!/bin/sh\necho "sudo $*" >> {log}\n[ "$1" = -n ] && shift\n"$@"\n'
        )
    return bin_dir


def _script_env(bin_dir: Path) -> dict[str, str]:
    """A PATH of the stand-ins plus links to the few real programs the script also runs: no
    real sudo, apt-get or dpkg-query can be reached."""
    basics = bin_dir.parent / "basics"
    basics.mkdir()
    for prog in ("bash", "cat", "sed"):
        real = shutil.which(prog)
        assert real is not None, prog
        (basics / prog).symlink_to(real)
    return {"PATH": f"{bin_dir}:{basics}"}


def test_system_deps_check_lists_what_dpkg_does_not_have(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=0, installed={"openssl", "make"}, sudo=False)
    result = _run(
        ["bash", str(SCRIPTS / "install-system-deps.sh"), "--check"], _script_env(bin_dir)
    )
    missing = result.stdout.split()
    assert "etcd-server" in missing
    assert "openssl" not in missing
    assert "make" not in missing


def test_system_deps_as_root_installs_the_missing_ones_with_apt(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=0, installed={"openssl"}, sudo=False)
    result = _run(["bash", str(SCRIPTS / "install-system-deps.sh")], _script_env(bin_dir))
    calls = (tmp_path / "calls.log").read_text()
    assert "apt-get update" in calls
    install = next(
        line for line in calls.splitlines() if line.startswith("apt-get") and "install" in line
    )
    assert "etcd-server" in install
    assert "openssl" not in install.split()
    assert "sudo" not in calls
    # The stand-in apt-get installs nothing, so the script must say what is still missing.
    assert result.returncode == 1
    assert "still missing after apt-get" in result.stderr


def test_system_deps_without_root_use_sudo(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=1000, installed=set(), sudo=True)
    _run(["bash", str(SCRIPTS / "install-system-deps.sh")], _script_env(bin_dir))
    calls = (tmp_path / "calls.log").read_text()
    assert "sudo -n apt-get update" in calls
    assert any(
        line.startswith("sudo -n apt-get") and "install" in line for line in calls.splitlines()
    )


def test_system_deps_without_root_or_sudo_name_the_packages(tmp_path: Path) -> None:
    bin_dir = _fake_bin(tmp_path, uid=1000, installed={"openssl"}, sudo=False)
    result = _run(["bash", str(SCRIPTS / "install-system-deps.sh")], _script_env(bin_dir))
    assert result.returncode == 1
    assert "etcd-server" in result.stderr
    assert "apt-get install --no-install-recommends" in result.stderr
    assert not (tmp_path / "calls.log").exists()  # nothing was attempted


def test_system_deps_with_everything_installed_run_no_apt(tmp_path: Path) -> None:
    listed = _run([str(SCRIPTS / "install-system-deps.sh"), "--list"]).stdout.split()
    bin_dir = _fake_bin(tmp_path, uid=1000, installed=set(listed), sudo=False)
    result = _run(["bash", str(SCRIPTS / "install-system-deps.sh")], _script_env(bin_dir))
    assert result.returncode == 0, result.stderr
    assert "all" in result.stdout
    assert not (tmp_path / "calls.log").exists()


def _mounts_under(path: Path) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [f.split()[4] for f in lines if f.split()[4].startswith(str(path))]


@pytest.mark.skipif(os.geteuid() != 0, reason="making a chroot needs root (CI runs as root)")
def test_with_root_mount_gives_a_plain_chroot_a_root_mount_point() -> None:
    """In a plain chroot "/" is not a mount point (buildah and runc fail there); through the
    wrapper the command sees one, from the folder it was started in, and nothing stays mounted."""
    # Not in pytest's temporary folders, which pytest removes on its own: the host's folders are
    # bound into this one (read-only), and it is removed only once none is.
    root = Path(tempfile.mkdtemp(prefix="zeta-chroot-"))
    binds: list[Path] = []
    (root / "tmp").mkdir(parents=True)
    (root / "work").mkdir()
    try:
        for name in ("usr", "bin", "sbin", "lib", "lib64", "etc", "dev", "proc"):
            host = Path("/") / name
            if host.is_symlink():  # merged /usr: /bin -> usr/bin
                (root / name).symlink_to(os.readlink(host))
            elif host.is_dir():
                (root / name).mkdir()
                subprocess.run(["mount", "--rbind", str(host), str(root / name)], check=True)
                binds.append(root / name)
                subprocess.run(["mount", "-o", "remount,bind,ro", str(root / name)], check=True)
        shutil.copy(SCRIPTS / "with-root-mount.sh", root / "with-root-mount.sh")
        (root / "probe.sh").write_text(
            'pwd\nawk \'$5 == "/" { print "root is mounted" }\' /proc/self/mountinfo\n'
        )
        plain = subprocess.run(
            ["chroot", str(root), "/bin/sh", "/probe.sh"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "root is mounted" not in plain.stdout  # the case the wrapper is for
        before = sorted(_mounts_under(root))
        wrapped = subprocess.run(
            ["chroot", str(root), "/bin/sh", "-c",
             "cd /work && /bin/bash /with-root-mount.sh /bin/sh /probe.sh"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert wrapped.returncode == 0, wrapped.stderr
        assert wrapped.stdout.splitlines() == ["/work", "root is mounted"], wrapped
        assert "not a mount point here" in wrapped.stderr
        # The wrapper's mounts lived in its own namespace: nothing of it is left here.
        assert sorted(_mounts_under(root)) == before
    finally:
        for b in reversed(binds):
            subprocess.run(["umount", "-l", str(b)], check=False)
    assert _mounts_under(root) == []
    shutil.rmtree(root)


def test_with_root_mount_runs_the_command_as_it_is_where_root_is_mounted(tmp_path: Path) -> None:
    out = subprocess.run(
        [str(SCRIPTS / "with-root-mount.sh"), "sh", "-c", 'pwd; echo "$1"; exit 3', "sh", "a b"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 3
    assert out.stdout.splitlines() == [str(tmp_path), "a b"]
    assert out.stderr == ""
