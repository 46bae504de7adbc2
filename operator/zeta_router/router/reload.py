"""Hot reload of the mounted routing file (and the external tiers' key files it names), and of
the request key file.

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

from zeta_router.api.routing import RoutingConfig
from zeta_router.router.config import (
    ConfigError,
    RuntimeConfig,
    compile_config,
    parse_config,
    read_key_file,
)
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
    """Watches the routing file and the API key files of its external tiers (mounted Secrets,
    swapped by the kubelet like the ConfigMap): a new routing file, or a new key in a file it
    names, compiles a new configuration. The key files are read at every poll (a few dozen
    bytes each); the routing file is parsed only when its content changes."""

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
        #: The routing file last read: its content, its parse (None: it did not parse, and
        #: ``_parse_error`` says why) and the key files it names, as (tier, path).
        self._content: bytes | None = None
        self._parsed: RoutingConfig | None = None
        self._parse_error = ""
        self._key_files: tuple[tuple[str, str], ...] = ()
        #: What each of those key files held at the last poll (the key, or why it could not be
        #: read): only ever compared and hashed, never logged.
        self._key_states: tuple[str, ...] = ()

    def prime(self, content: bytes, config: RuntimeConfig) -> None:
        """Mark ``content`` (the file the router started with), compiled into ``config``, as
        already applied, with the keys ``config`` was compiled with."""
        self._remember(content, config.source)
        self._key_states = tuple(
            _key_state(config.tier_by_name[tier].api_key) for tier, _ in self._key_files
        )
        self._digest = self._state_digest()

    def poll(self) -> bool:
        """Look at the files once; returns True when a new configuration was applied."""
        try:
            content = self.path.read_bytes()
        except OSError as exc:
            return self._reject(f"missing:{exc.errno}".encode(), f"cannot read {self.path}: {exc}")
        new_file = content != self._content
        if new_file:
            self._remember(content)
        before = self._key_states
        self._key_states = tuple(_read_state(tier, path) for tier, path in self._key_files)
        digest = self._state_digest()
        if digest == self._digest:
            return False
        if self._parsed is None:
            return self._reject_digest(digest, self._parse_error)
        try:
            runtime = compile_config(self._parsed, self.local_tier, self.ngram_key)
        except ConfigError as exc:
            return self._reject_digest(digest, f"{self.path}: {exc}")
        if not new_file and self._digest is not None:
            rotated = [
                tier
                for (tier, _), old, new in zip(
                    self._key_files, before, self._key_states, strict=True
                )
                if old != new
            ]
            if rotated:
                log.info(
                    "external tier API keys reloaded",
                    extra={"event": "external_keys_loaded", "tiers": rotated},
                )
        self._digest = digest
        self.on_config(runtime)
        return True

    def _remember(self, content: bytes, parsed: RoutingConfig | None = None) -> None:
        """Take ``content`` as the routing file last read (parsed here unless ``parsed`` is
        its parse)."""
        self._content = content
        self._parse_error = ""
        if parsed is None:
            try:
                parsed = parse_config(content.decode("utf-8"))
            except UnicodeDecodeError as exc:
                self._parse_error = f"{self.path} is not UTF-8 text: {exc}"
            except ConfigError as exc:
                self._parse_error = f"{self.path}: {exc}"
        self._parsed = parsed
        self._key_files = tuple(
            (t.name, t.external.api_key_file)
            for t in (parsed.tiers if parsed is not None else ())
            if t.external is not None and t.external.api_key_file is not None
        )

    def _state_digest(self) -> bytes:
        h = hashlib.sha256(self._content or b"")
        for state in self._key_states:
            h.update(b"\0" + state.encode())
        return h.digest()

    def _reject(self, content: bytes, reason: str) -> bool:
        return self._reject_digest(hashlib.sha256(content).digest(), reason)

    def _reject_digest(self, digest: bytes, reason: str) -> bool:
        if digest != self._digest:
            self._digest = digest
            self.on_error(reason)
        return False


def _key_state(key: str | None) -> str:
    return f"key:{key}"


def _read_state(tier: str, path: str) -> str:
    """What a key file holds now, for comparison: its key, or why it cannot be used."""
    try:
        return _key_state(read_key_file(tier, path))
    except ConfigError as exc:
        return f"error:{exc}"


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
