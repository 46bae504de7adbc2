"""Keys, certificates and tokens for the local control plane, made with the `openssl` command
(present on every Debian machine) so the project needs no extra Python dependency for them."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Names the apiserver answers to: clients here use 127.0.0.1; the in-cluster names keep
# certificates valid for anything that talks to it as `kubernetes.default.svc`.
_SERVER_SANS = (
    "IP:127.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    tokens_csv: Path
    admin_token: str
    controller_manager_token: str


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("openssl not found on PATH; install Debian's openssl package")
    result = subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def generate(directory: Path) -> Pki:
    """Create a CA, an apiserver serving certificate signed by it, a service-account signing key
    pair and a static token file, all under ``directory`` (mode 0700)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    d = directory
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=d)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
        "-subj", "/CN=zeta-router-local-ca", "-out", "ca.crt", cwd=d,
    )  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "serving.key", cwd=d)
    _openssl(
        "req", "-new", "-key", "serving.key", "-subj", "/CN=kube-apiserver", "-out", "serving.csr",
        cwd=d,
    )  # fmt: skip
    (d / "serving.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(_SERVER_SANS)}\n"
    )
    _openssl(
        "x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", "serving.ext",
        "-out", "serving.crt", cwd=d,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)

    admin_token = secrets.token_urlsafe(32)
    cm_token = secrets.token_urlsafe(32)
    tokens = d / "tokens.csv"
    # token,user,uid,"groups"; the controller-manager runs every controller under its own
    # identity (no per-controller service accounts), which needs cluster-admin rights.
    tokens.write_text(
        f'{admin_token},zeta-admin,zeta-admin,"system:masters"\n'
        f"{cm_token},system:kube-controller-manager,system:kube-controller-manager,"
        '"system:masters"\n'
    )
    for p in d.iterdir():
        p.chmod(0o600)
    return Pki(
        ca_cert=d / "ca.crt",
        ca_key=d / "ca.key",
        serving_cert=d / "serving.crt",
        serving_key=d / "serving.key",
        sa_key=d / "sa.key",
        sa_pub=d / "sa.pub",
        tokens_csv=tokens,
        admin_token=admin_token,
        controller_manager_token=cm_token,
    )
