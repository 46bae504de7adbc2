"""Keys, certificates and tokens for the local control plane, made with the `openssl` command
(present on every Debian machine) so the project needs no extra Python dependency for them."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Sequence
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


def server_sans(extra_ips: Sequence[str] = ()) -> list[str]:
    """The subjectAltName entries of the apiserver's serving certificate."""
    extra = [f"IP:{ip}" for ip in extra_ips if f"IP:{ip}" not in _SERVER_SANS]
    return [*_SERVER_SANS, *dict.fromkeys(extra)]


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


def issue_client_cert(
    ca_cert: Path, ca_key: Path, directory: Path, name: str, common_name: str, org: str = ""
) -> ClientCert:
    """A client certificate signed by the cluster CA: the apiserver authenticates it as user
    ``common_name`` in group ``org`` (``--client-ca-file``), so no token file changes and no
    apiserver restart are needed. Files ``<name>.crt`` and ``<name>.key`` (mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    d = directory
    subject = f"/O={org}/CN={common_name}" if org else f"/CN={common_name}"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=d)
    (d / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-CAserial", f"{name}.srl", "-days", "365", "-sha256",
        "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d,
    )  # fmt: skip
    for suffix in ("crt", "key", "csr", "ext", "srl"):
        path = d / f"{name}.{suffix}"
        if path.exists():
            path.chmod(0o600)
    return ClientCert(d / f"{name}.crt", d / f"{name}.key")


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


def generate(directory: Path, extra_ips: Sequence[str] = ()) -> Pki:
    """Create a CA, an apiserver serving certificate signed by it, a service-account signing key
    pair and a static token file, all under ``directory`` (mode 0700). ``extra_ips`` are more
    addresses the serving certificate is valid for (a real node's pods reach the apiserver on
    the node's bridge and through the ``kubernetes`` Service)."""
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
        f"subjectAltName={','.join(server_sans(extra_ips))}\n"
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
