"""Credentials for the Kubernetes client and kopf: kubeconfig parsing, merging, the in-cluster
service account and exec plugins, without a cluster."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
import yaml

from zeta_router.kube import (
    Credentials,
    CredentialsError,
    Kube,
    credentials_from_kubeconfig,
    credentials_in_cluster,
    load_credentials,
)


def _write(path: Path, doc: object) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _config(server: str, user: dict[str, object], **cluster: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ns1"}}],
    }


def test_kubeconfig_files_resolve_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(b"CA")
    (tmp_path / "pki" / "me.crt").write_bytes(b"CERT")
    (tmp_path / "pki" / "me.key").write_bytes(b"KEY")
    cfg = _write(
        tmp_path / "config",
        _config(
            "https://127.0.0.1:6443/",
            {"client-certificate": "pki/me.crt", "client-key": "pki/me.key"},
            **{"certificate-authority": "pki/ca.crt"},
        ),
    )
    creds = credentials_from_kubeconfig([cfg])
    assert creds.server == "https://127.0.0.1:6443"
    assert (creds.ca_data, creds.certificate_data, creds.private_key_data) == (
        b"CA",
        b"CERT",
        b"KEY",
    )
    assert creds.default_namespace == "ns1"


def test_kubeconfig_data_fields_and_token(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path / "config",
        _config(
            "https://h:1",
            {"token": "t0k"},
            **{"certificate-authority-data": base64.b64encode(b"CA").decode()},
        ),
    )
    creds = load_credentials(cfg)
    assert creds.ca_data == b"CA"
    assert creds.bearer_token() == "t0k"


def test_kubeconfig_list_merges_first_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _write(tmp_path / "a", _config("https://first:1", {"token": "a"}))
    second = _write(tmp_path / "b", _config("https://second:1", {"token": "b"}))
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    assert load_credentials().server == "https://first:1"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("current-context"), "has no current-context"),
        (lambda d: d.update({"current-context": "nope"}), "context 'nope' is not defined"),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), "has no server"),
        (
            lambda d: d["users"][0]["user"].update({"client-certificate": "/nonexistent/x.crt"}),
            "cannot be read",
        ),
    ],
)
def test_kubeconfig_problems_are_named(tmp_path: Path, mutate: object, message: str) -> None:
    doc = _config("https://h:1", {"token": "t"})
    mutate(doc)  # type: ignore[operator]
    cfg = _write(tmp_path / "config", doc)
    with pytest.raises(CredentialsError, match=message):
        credentials_from_kubeconfig([cfg])


def test_missing_kubeconfig_is_named(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="kubeconfig not found"):
        load_credentials(tmp_path / "absent")


def test_in_cluster_reads_the_service_account_and_rereads_the_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("one\n")
    (tmp_path / "namespace").write_text("zeta-system")
    (tmp_path / "ca.crt").write_bytes(b"CA")
    env = {"KUBERNETES_SERVICE_HOST": "198.19.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = credentials_in_cluster(tmp_path, env)
    assert creds.server == "https://198.19.0.1:443"
    assert creds.default_namespace == "zeta-system"
    assert creds.bearer_token() == "one"
    # The kubelet rotates the token file: the credentials follow it.
    (tmp_path / "token").write_text("two\n")
    assert creds.bearer_token() == "two"


def test_in_cluster_without_a_mounted_token_says_so(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "198.19.0.1"}
    with pytest.raises(CredentialsError, match="automountServiceAccountToken"):
        credentials_in_cluster(tmp_path, env)


def test_ipv6_service_host_is_bracketed(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t")
    creds = credentials_in_cluster(tmp_path, {"KUBERNETES_SERVICE_HOST": "fd00::1"})
    assert creds.server == "https://[fd00::1]:443"


def test_exec_plugin_supplies_the_token(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    status = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential"}
    status["status"] = {"token": "from-plugin"}  # type: ignore[assignment]
    plugin.write_text(
        "#!/bin/sh\n"
        # the plugin sees the request in KUBERNETES_EXEC_INFO, as kubectl passes it
        'case "$KUBERNETES_EXEC_INFO" in *ExecCredential*) ;; *) exit 3;; esac\n'
        f"echo '{json.dumps(status)}'\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin)}}
    cfg = _write(
        tmp_path / "config",
        _config("https://127.0.0.1:1", user, **{"insecure-skip-tls-verify": True}),
    )
    kube = Kube.from_kubeconfig(cfg)
    assert kube.credentials.bearer_token() == "from-plugin"
    assert kube._headers()["Authorization"] == "Bearer from-plugin"


def test_failing_exec_plugin_is_a_credentials_error(tmp_path: Path) -> None:
    user = {"exec": {"command": str(tmp_path / "missing-plugin")}}
    cfg = _write(tmp_path / "config", _config("https://127.0.0.1:1", user))
    with pytest.raises(CredentialsError, match="exec plugin"):
        Kube.from_kubeconfig(cfg)


def test_basic_auth_header() -> None:
    kube = Kube(
        Credentials(server="https://127.0.0.1:1", insecure=True, username="a", password="b")
    )
    assert kube._headers()["Authorization"] == "Basic " + base64.b64encode(b"a:b").decode()


def test_kopf_gets_the_same_identity(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path / "config",
        _config(
            "https://h:1",
            {"token": "t0k"},
            **{"certificate-authority-data": base64.b64encode(b"CA").decode()},
        ),
    )
    info = load_credentials(cfg).to_kopf()
    assert (info.server, info.token, info.scheme, info.ca_data) == (
        "https://h:1",
        "t0k",
        "Bearer",
        b"CA",
    )
    assert info.default_namespace == "ns1"
