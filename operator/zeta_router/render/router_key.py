"""The Secret ``<router>-router-key`` (pure): the key every router of a ZetaRouter signs its
request ids and session tokens with, so that any replica trusts what another one issued
(``key``: one per line, the first signs; rotated by editing the Secret, docs/router.md), and the
secret of the hashed word n-grams of its learning samples (``ngram-key``; the operator's learner
reads it to hash a cold-start file alike).

Both are random and made once: the controller passes fresh bytes in and only ever *creates* the
Secret (an existing one, including one a user made to choose the keys, is left alone), so a
reconcile never rotates them.
"""

from __future__ import annotations

import base64
from typing import Any

from zeta_router.render import names


def build_router_key_secret(name: str, key: str, ngram_key: str | None = None) -> dict[str, Any]:
    data = {names.ROUTER_KEY_FIELD: base64.b64encode(key.encode()).decode()}
    if ngram_key is not None:
        data[names.NGRAM_KEY_FIELD] = base64.b64encode(ngram_key.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": names.router_key_secret_name(name),
            "labels": names.labels(name, "router"),
        },
        "type": "Opaque",
        "data": data,
    }
