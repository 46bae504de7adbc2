"""A kubeconfig ``exec`` credential plugin for tests: a small script that hands out the tokens
of a list in turn (or ``token-1``, ``token-2``, ...), each with an ``expirationTimestamp``
``lifetime`` seconds ahead, and counts its runs in a file beside it."""

from __future__ import annotations

import json
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = """#!{python}
import datetime, json, pathlib
here = pathlib.Path({dir!r})
runs = here / "runs"
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
tokens = json.loads((here / "tokens.json").read_text())
token = tokens[(n - 1) % len(tokens)] if tokens else "token-%d" % n
now = datetime.datetime.now(datetime.timezone.utc)
expiry = now + datetime.timedelta(seconds={lifetime})
status = {{"token": token, "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}}
print(json.dumps({{
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "kind": "ExecCredential",
    "status": status,
}}))
"""


@dataclass(frozen=True)
class ExecPlugin:
    command: Path
    runs_file: Path

    @property
    def runs(self) -> int:
        return int(self.runs_file.read_text()) if self.runs_file.exists() else 0

    def user(self) -> dict[str, object]:
        """The kubeconfig ``user`` entry that runs this plugin."""
        return {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": str(self.command),
                "interactiveMode": "Never",
            }
        }


def exec_plugin(directory: Path, lifetime: float, tokens: list[str] | None = None) -> ExecPlugin:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokens.json").write_text(json.dumps(tokens or []))
    command = directory / "credential-plugin"
    command.write_text(
        _SCRIPT.format(python=sys.executable, dir=str(directory), lifetime=float(lifetime))
    )
    command.chmod(command.stat().st_mode | stat.S_IXUSR)
    return ExecPlugin(command, directory / "runs")


_MINTING_SCRIPT = """#!{python}
import base64, datetime, json, pathlib, secrets, time
from zeta_router.kube import Kube, api_path

here = pathlib.Path({dir!r})
runs = here / "runs"
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
kube = Kube.from_kubeconfig({admin!r})
issued = time.time()
name = "{account}-exec-%d-%s" % (n, secrets.token_hex(3))
kube.create(api_path("v1", "secrets", {namespace!r}), {{
    "apiVersion": "v1",
    "kind": "Secret",
    "type": "kubernetes.io/service-account-token",
    "metadata": {{
        "name": name,
        "labels": {{{label!r}: "true"}},
        "annotations": {{
            "kubernetes.io/service-account.name": {account!r},
            {revoke_at!r}: str(issued + {revoke_after}),
        }},
    }},
}})
deadline = time.time() + 60
while True:
    data = kube.get(api_path("v1", "secrets", {namespace!r}, name)).get("data") or {{}}
    if "token" in data:
        break
    if time.time() > deadline:
        raise SystemExit("the token controller filled no token into " + name)
    time.sleep(0.2)
token = base64.b64decode(data["token"]).decode()
with (here / "tokens").open("a") as out:
    out.write(token + "\\n")
expiry = datetime.datetime.fromtimestamp(issued + {announced}, datetime.timezone.utc)
print(json.dumps({{
    "apiVersion": "client.authentication.k8s.io/v1beta1",
    "kind": "ExecCredential",
    "status": {{"token": token, "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}},
}}))
"""

MINTED_LABEL = "zeta-test/exec-token"
REVOKE_AT = "zeta-test/revoke-at"
"""Annotation on a minted token Secret: the epoch second after which it is to be deleted."""


def minting_plugin(
    directory: Path,
    admin_kubeconfig: Path,
    namespace: str,
    account: str,
    revoke_after: float,
    announced_lifetime: float,
) -> ExecPlugin:
    """A plugin that mints a real token for service account ``namespace/account`` on every run
    (a token Secret, labelled :data:`MINTED_LABEL`, annotated to be revoked ``revoke_after``
    seconds later), announces it valid for ``announced_lifetime`` seconds, and appends each
    token to ``directory/tokens``. Deleting the Secret revokes the token at the apiserver."""
    directory.mkdir(parents=True, exist_ok=True)
    command = directory / "credential-plugin"
    command.write_text(
        _MINTING_SCRIPT.format(
            python=sys.executable,
            dir=str(directory),
            admin=str(admin_kubeconfig),
            namespace=namespace,
            account=account,
            label=MINTED_LABEL,
            revoke_at=REVOKE_AT,
            revoke_after=float(revoke_after),
            announced=float(announced_lifetime),
        )
    )
    command.chmod(command.stat().st_mode | stat.S_IXUSR)
    return ExecPlugin(command, directory / "runs")
