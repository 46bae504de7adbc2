"""Hot reload of the mounted routing file.

Kubernetes updates a mounted ConfigMap by writing a new timestamped directory and swapping the
``..data`` symlink, so the file's inode and resolved path change while its own path does not; a
plain editor rewrite keeps the path and may even keep size and mtime. The watcher therefore
polls: it stats the file (following symlinks) and also compares the content, and hands each new
content to the router only when it parses and validates. A bad file is reported once per
distinct content and the last good configuration stays in use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from zeta_router.router.config import ConfigError, RuntimeConfig, compile_config, parse_config

log = logging.getLogger("zeta_router.router.reload")


class ConfigWatcher:
    def __init__(
        self,
        path: Path,
        *,
        local_tier: str | None,
        on_config: Callable[[RuntimeConfig], None],
        on_error: Callable[[str], None],
        interval: float = 1.0,
    ) -> None:
        self.path = path
        self.local_tier = local_tier
        self.on_config = on_config
        self.on_error = on_error
        self.interval = interval
        self._digest: bytes | None = None
        self._wake = asyncio.Event()

    def prime(self, content: bytes) -> None:
        """Mark ``content`` (the file the router started with) as already applied."""
        self._digest = hashlib.sha256(content).digest()

    def check_now(self) -> None:
        """Ask the polling loop to look at the file right away (SIGHUP)."""
        self._wake.set()

    def poll(self) -> bool:
        """Look at the file once; returns True when a new configuration was applied."""
        try:
            content = self.path.read_bytes()
        except OSError as exc:
            return self._reject(f"missing:{exc.errno}".encode(), f"cannot read {self.path}: {exc}")
        digest = hashlib.sha256(content).digest()
        if digest == self._digest:
            return False
        try:
            text = content.decode("utf-8")
            runtime = compile_config(parse_config(text), self.local_tier)
        except UnicodeDecodeError as exc:
            return self._reject(content, f"{self.path} is not UTF-8 text: {exc}")
        except ConfigError as exc:
            return self._reject(content, f"{self.path}: {exc}")
        self._digest = digest
        self.on_config(runtime)
        return True

    def _reject(self, content: bytes, reason: str) -> bool:
        digest = hashlib.sha256(content).digest()
        if digest != self._digest:
            self._digest = digest
            self.on_error(reason)
        return False

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()
            try:
                self.poll()
            except Exception:  # a watcher that dies would silently freeze the config
                log.exception("config poll failed", extra={"event": "config_poll_failed"})
