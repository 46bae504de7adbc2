"""The chart's operator installed on the real node for one e2e module: the set-up those modules
share (a namespace for the module's objects, one for the operator, the Helm release serving the
first) and its tear-down, which runs whatever failed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

from support.cluster import condition_is, unique_name, wait_for
from support.fixtures_node import RealNodeHandle
from zeta_router.kube import ApiError, api_path
from zeta_router_dev.cluster.workloads import debug_dump, ensure_namespace, helm, install_operator

T = TypeVar("T")


@dataclass(frozen=True)
class ModuleInstall:
    real_node: RealNodeHandle
    namespace: str
    """Where the module's ZetaRouters and other objects go (the operator serves it)."""
    operators: str
    """The operator's own namespace."""
    release: str
    """The chart's Helm release."""

    def install_operator(self) -> None:
        """``helm install`` the chart serving :attr:`namespace`, and wait for its pod."""
        install_operator(
            self.real_node.kubeconfig,
            self.release,
            self.operators,
            [self.namespace],
            unique_name("zr-peering"),
        )

    def wait(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        """:func:`~support.cluster.wait_for`, failing with what the namespace holds (pods,
        events, logs): a set-up that times out says why."""
        try:
            return wait_for(probe, timeout, what)
        except AssertionError as e:
            raise AssertionError(
                f"{e}\n{debug_dump(self.real_node.kube, self.namespace)}"
            ) from None

    def wait_for_zetarouter(self, name: str, condition: str, timeout: float) -> None:
        """Until ZetaRouter ``name``'s ``condition`` is True."""
        path = api_path("zeta.ai/v1alpha1", "zetarouters", self.namespace, name)
        self.wait(
            lambda: condition_is(self.real_node.kube.get(path), condition, "True"),
            timeout,
            f"ZetaRouter {self.namespace}/{name} {condition}",
        )


@contextmanager
def module_install(real_node: RealNodeHandle, prefix: str) -> Iterator[ModuleInstall]:
    """Two new namespaces (``<prefix>-…`` and ``zt-operator-…``); at the end the release is
    uninstalled (when it was installed) and both namespaces are deleted."""
    kube = real_node.kube
    install = ModuleInstall(
        real_node, unique_name(prefix), unique_name("zt-operator"), unique_name("zr")
    )
    try:
        for ns in (install.namespace, install.operators):
            ensure_namespace(kube, ns)
        yield install
    finally:
        with suppress(ApiError, RuntimeError):
            helm(
                real_node.kubeconfig, "uninstall", install.release, "--namespace", install.operators
            )
        for ns in (install.namespace, install.operators):
            with suppress(ApiError, RuntimeError):
                kube.delete(api_path("v1", "namespaces", None, ns))
