"""The Secret ``<router>-router-key`` (pure): the key every router of a ZetaRouter signs its
request ids and session tokens with, so that any replica trusts what another one issued.

The key is random and made once: the controller passes fresh bytes in and only ever *creates*
the Secret (an existing one, including one a user made to choose the key, is left alone), so a
reconcile never rotates it and the operator never needs to read Secrets.
"""

from __future__ import annotations

import base64
from typing import Any

from zeta_router.render import names


def build_router_key_secret(name: str, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": names.router_key_secret_name(name),
            "labels": names.labels(name, "router"),
        },
        "type": "Opaque",
        "data": {names.ROUTER_KEY_FIELD: base64.b64encode(key.encode()).decode()},
    }
