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
