"""Hot reload of the mounted routing file, and of the request key file.

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
from zeta_router.router.ids import KeyFileError, Signer, key_id, parse_keys

log = logging.getLogger("zeta_router.router.reload")


class _PolledFile:
    """The polling loop both watchers share: :meth:`poll` every ``interval`` seconds, or at once
    after :meth:`check_now` (SIGHUP)."""

    #: What the file holds, for the log line of a poll that failed.
    what = "file"

    def __init__(self, path: Path, interval: float) -> None:
        self.path = path
        self.interval = interval
        self._digest: bytes | None = None
        self._wake = asyncio.Event()

    def check_now(self) -> None:
        """Ask the polling loop to look at the file right away (SIGHUP)."""
        self._wake.set()

    def poll(self) -> bool:
        raise NotImplementedError

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()
            try:
                self.poll()
            except Exception:  # a watcher that dies would silently freeze what it watches
                log.exception(
                    f"{self.what} poll failed", extra={"event": f"{self.what}_poll_failed"}
                )


class ConfigWatcher(_PolledFile):
    what = "config"

    def __init__(
        self,
        path: Path,
        *,
        local_tier: str | None,
        on_config: Callable[[RuntimeConfig], None],
        on_error: Callable[[str], None],
        interval: float = 1.0,
        ngram_key: bytes | None = None,
    ) -> None:
        super().__init__(path, interval)
        self.local_tier = local_tier
        self.ngram_key = ngram_key
        self.on_config = on_config
        self.on_error = on_error

    def prime(self, content: bytes) -> None:
        """Mark ``content`` (the file the router started with) as already applied."""
        self._digest = hashlib.sha256(content).digest()

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
            runtime = compile_config(parse_config(text), self.local_tier, self.ngram_key)
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


class KeyWatcher(_PolledFile):
    """Re-reads the mounted request key file (a Secret volume, swapped like a ConfigMap's) and
    hands new keys to the signer: the first signs from then on, every one verifies. A file that
    cannot be used is reported once per distinct content and the keys in use stay."""

    what = "key"

    def __init__(
        self,
        path: Path,
        signer: Signer,
        *,
        on_keys: Callable[[Signer], None] | None = None,
        interval: float = 1.0,
    ) -> None:
        super().__init__(path, interval)
        self.signer = signer
        self.on_keys = on_keys

    def poll(self) -> bool:
        """Look at the file once; returns True when new keys were taken."""
        unreadable: KeyFileError | None = None
        try:
            content = self.path.read_bytes()
        except OSError as exc:
            content = f"missing:{exc.errno}".encode()
            unreadable = KeyFileError(f"cannot read {self.path}: {exc.strerror or exc}")
        digest = hashlib.sha256(content).digest()
        if digest == self._digest:
            return False
        first = self._digest is None
        self._digest = digest
        try:
            # The content just hashed, not a second read that could see another file.
            if unreadable is not None:
                raise unreadable
            keys = parse_keys(content, self.path)
            if first and self.signer.key_ids == tuple(key_id(k) for k in keys):
                return False  # what the router started with
            self.signer.set_keys(keys)
        except KeyFileError as exc:
            log.error(
                "request key file not used; the keys in use stay",
                extra={"event": "request_key_rejected", "detail": str(exc)},
            )
            return False
        log.info(
            "request keys reloaded",
            extra={
                "event": "request_keys_loaded",
                "keys": len(self.signer.key_ids),
                "signing": self.signer.key_ids[0],
            },
        )
        if self.on_keys is not None:
            self.on_keys(self.signer)
        return True
