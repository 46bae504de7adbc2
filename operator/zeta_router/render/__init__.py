"""Pure functions from a parsed ZetaRouter to the manifests of its children (plain dicts).

- ``render.children``: :func:`render` (everything at once) and :func:`build_children`.
- ``render.deployment``: :func:`build_deployment` (model server + router sidecar per tier).
- ``render.services``: :func:`build_tier_service`, :func:`build_entry_service`.
- ``render.configmap``: the routing configuration, its generation and its ConfigMap.
- ``render.names``: names, labels and selectors.

No I/O and no clock here; namespaces and owner references are added by the controller.
"""
