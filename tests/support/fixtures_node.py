"""The real local node for the tests about pods (marker ``node``).

- ``node_session``: the session's node, started on first use with the same code as
  `zeta-router cluster up --node real` (images built or found cached first, then loaded into its
  containerd), in a temporary state folder, and brought down at the end. It takes the host-wide
  lock, waiting up to :data:`LOCK_WAIT` seconds for another real node to finish.
- ``real_node``: the running node (kubeconfig, admin client, images).

Tests marked ``node_exclusive`` need the machine to themselves (they start their own node, or the
demo does): they run after every other test, once the session's node is down.

A node that cannot start fails the test with the reason (never a skip): the real node needs
root, the packages of ``make system-deps``, the build of ``make control-plane`` and the images
of ``make images``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support import deadlines
from zeta_router.kube import Kube
from zeta_router_dev.cluster import lock
from zeta_router_dev.cluster.binaries import MissingBinaryError
from zeta_router_dev.cluster.hostchanges import host_snapshot
from zeta_router_dev.cluster.node import NodeError, NodeInfo, RealNode
from zeta_router_dev.cluster.nodeconfig import RUN_DIR
from zeta_router_dev.images.build import BuiltImage, ImageBuilder, ImageBuildError

LOCK_WAIT = 600.0
POD_DEADLINE = deadlines.POD


@dataclass
class RealNodeHandle:
    info: NodeInfo
    kube: Kube
    images: list[BuiltImage]
    node: RealNode

    @property
    def kubeconfig(self) -> Path:
        return self.info.kubeconfig


@dataclass
class NodeSession:
    workdir: Path
    node: RealNode
    handle: RealNodeHandle | None = None
    before: dict[str, Any] | None = None
    """The machine before the session's node first started (see ``host_snapshot``)."""
    timings: dict[str, float] = field(default_factory=dict)

    def owned_dirs(self) -> list[Path]:
        return [self.node.state_dir, RUN_DIR]

    def images(self) -> list[BuiltImage]:
        try:
            return ImageBuilder().build()
        except ImageBuildError as e:
            pytest.fail(f"cannot build the node's images (run `make images`): {e}", pytrace=False)

    def ensure_up(self) -> RealNodeHandle:
        if self.handle is not None:
            return self.handle
        images = self.images()
        if self.before is None:
            # The machine as it is without any node: what a node someone left behind changed is
            # undone first (``up`` would undo it too, after this snapshot).
            try:
                with lock.held(wait=LOCK_WAIT, note=str(self.node.state_dir)):
                    self.node.clean_after_stale_node(lambda _msg: None)
                    self.before = host_snapshot(self.owned_dirs())
            except (NodeError, lock.NodeLockBusyError) as e:
                pytest.fail(f"cannot start the real node: {e}", pytrace=False)
        try:
            info = self.node.up(timeout=300, lock_wait=LOCK_WAIT, images=images)
        except (NodeError, MissingBinaryError) as e:
            pytest.fail(f"cannot start the real node: {e}", pytrace=False)
        self.timings.setdefault("first_up_s", info.ready_seconds)
        self.handle = RealNodeHandle(info, Kube.from_kubeconfig(info.kubeconfig), images, self.node)
        return self.handle

    def release(self) -> None:
        """Bring the node down (the machine as it was); a later ``ensure_up`` starts it again."""
        self.handle = None
        self.node.down()


def stable_tempdir(prefix: str) -> Path:
    """A folder outside pytest's temporary folders: pytest removes all but the three newest of
    those, and other test sessions on this machine may do so while a node still lives in one."""
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def node_session() -> Iterator[NodeSession]:
    workdir = stable_tempdir("zeta-test-node-")
    session = NodeSession(workdir, RealNode(workdir / "node"))
    try:
        yield session
    finally:
        session.release()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def node_tmp() -> Iterator[Path]:
    """A temporary folder for a node of a test's own (see :func:`stable_tempdir`)."""
    path = stable_tempdir("zeta-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def real_node(node_session: NodeSession) -> RealNodeHandle:
    return node_session.ensure_up()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need the machine to themselves run last, after the session's node is down.
    A test on the session's node may first wait up to LOCK_WAIT for another real node to
    finish: its time limit (pytest-timeout) gains that wait, which is not the test's own."""
    for item in items:
        if "real_node" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "timeout"
        ):
            limit = float(item.config.getini("timeout") or 0)
            if limit > 0:
                item.add_marker(pytest.mark.timeout(limit + LOCK_WAIT))
    exclusive = [i for i in items if i.get_closest_marker("node_exclusive")]
    if exclusive:
        rest = [i for i in items if not i.get_closest_marker("node_exclusive")]
        items[:] = rest + exclusive
