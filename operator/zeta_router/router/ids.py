"""Signed request ids and session tokens: what a router must know about an earlier request,
carried by the request itself, so that any replica can act on it without a shared store.

A **request id** (the ``x-request-id`` of every routed answer) holds the decision: when it was
made, the context, the score, the tier decided and the tier that answered, the routing
generation, and a random nonce. ``POST /v1/feedback`` on any replica verifies the id and knows
all of it. A **session token** (``x-zeta-session``) holds a conversation's floor: the largest
tier it was routed to and until when that holds.

Both are ``base64url(payload) "." base64url(HMAC-SHA256(key, payload)[:16])``. The payload
starts with a kind byte, so neither can pass for the other, then the nonce and the time; the
first 20 characters of the ids of one request (one per tier tried) are therefore the same. The
key is per ZetaRouter (a Secret the operator creates and mounts into every router); a router
without one makes a random key of its own, valid in that process only.

A client can read an id (nothing secret is in it) but cannot forge or alter one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path

KIND_REQUEST = 1
KIND_SESSION = 2
MAC_BYTES = 16
MIN_KEY_BYTES = 16
#: Longest id or token accepted for verification (names are at most 255 bytes each).
MAX_TEXT = 1200

_HEAD = struct.Struct(">B8sQ")  # kind, nonce, milliseconds since the epoch (top 2 bytes: 0)
_REQUEST = struct.Struct(">IfB")  # generation, score (float32), flags
FLAG_FORCED = 1
FLAG_STICKY = 2


#: Nonces only need to be unique (the signature protects the ids): a generator seeded from the
#: system's randomness once per process, instead of a system call per request.
_NONCES = random.Random(os.urandom(32))


def new_nonce() -> bytes:
    return _NONCES.getrandbits(64).to_bytes(8, "big")


class KeyFileError(ValueError):
    """A key file that cannot be used."""


class InvalidTokenError(ValueError):
    """Not an id or token signed with this router's key (malformed, forged or altered)."""


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a request id says about its request."""

    nonce: bytes
    issued_ms: int  # wall clock, milliseconds since the epoch
    generation: int
    score: float
    context: str
    decided: str  # tier the decision chose
    served: str | None  # tier that answered (None: no tier could)
    forced: bool = False
    sticky: bool = False  # the decision was raised to a conversation's floor

    @property
    def request_key(self) -> str:
        """The nonce as hex: the same for every id of one request, whichever tier answered."""
        return self.nonce.hex()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    nonce: bytes
    issued_ms: int
    floor: str  # tier name
    expires_ms: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _name(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"name {value[:40]!r}... is longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _names(data: bytes, offset: int, count: int) -> list[str]:
    out = []
    for _ in range(count):
        if offset >= len(data):
            raise InvalidTokenError("truncated")
        n = data[offset]
        end = offset + 1 + n
        if end > len(data):
            raise InvalidTokenError("truncated")
        out.append(data[offset + 1 : end].decode("utf-8"))
        offset = end
    if offset != len(data):
        raise InvalidTokenError("trailing bytes")
    return out


def key_id(key: bytes) -> str:
    """A short public name of a key (for metrics and logs; tells nothing of the key)."""
    return hashlib.sha256(b"zeta-router key id\0" + key).hexdigest()[:12]


def read_keys(path: Path) -> list[bytes]:
    """The keys of a key file: one per non-empty line (surrounding blanks ignored)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_keys(text, path)


def parse_keys(text: bytes, path: Path) -> list[bytes]:
    """The keys in ``text``, the content of the key file ``path`` (named in the error)."""
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    if not keys:
        raise KeyFileError(f"{path} holds no key")
    return keys


class Signer:
    """Signs with the first key, verifies with any. Its keys can be replaced while it is in use
    (:meth:`set_keys`: one assignment, atomic for the event loop), which is how a rotation
    reaches a running router."""

    __slots__ = ("_macs", "ephemeral", "key_ids")

    def __init__(self, keys: list[bytes], ephemeral: bool = False) -> None:
        self._macs: list[hmac.HMAC] = []
        self.key_ids: tuple[str, ...] = ()
        self.set_keys(keys)
        self.ephemeral = ephemeral

    def set_keys(self, keys: list[bytes]) -> None:
        """Sign with ``keys[0]`` from now on and verify with any of them; raises
        :class:`KeyFileError` (keeping the keys in use) for keys that cannot be used."""
        if not keys:
            raise KeyFileError("no key")
        for k in keys:
            if len(k) < MIN_KEY_BYTES:
                raise KeyFileError(f"a key must be at least {MIN_KEY_BYTES} bytes")
        # A keyed HMAC object per key, copied per use: cheaper than keying one each time.
        self._macs = [hmac.new(k, digestmod=hashlib.sha256) for k in keys]
        self.key_ids = tuple(key_id(k) for k in keys)

    @classmethod
    def random(cls) -> Signer:
        return cls([os.urandom(32)], ephemeral=True)

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """One key per non-empty line (surrounding blanks ignored); the first one signs."""
        keys = read_keys(path)
        try:
            return cls(keys)
        except KeyFileError as exc:
            raise KeyFileError(f"{path}: {exc}") from None

    # -- signing ---------------------------------------------------------------------------

    def _seal(self, payload: bytes) -> str:
        mac = self._macs[0].copy()
        mac.update(payload)
        return _b64(payload) + "." + _b64(mac.digest()[:MAC_BYTES])

    def request_id(self, info: RequestInfo) -> str:
        flags = (FLAG_FORCED if info.forced else 0) | (FLAG_STICKY if info.sticky else 0)
        payload = (
            _HEAD.pack(KIND_REQUEST, info.nonce, info.issued_ms)
            + _REQUEST.pack(
                min(info.generation, 0xFFFFFFFF),
                info.score,
                flags,
            )
            + _name(info.context)
            + _name(info.decided)
            + _name(info.served or "")
        )
        return self._seal(payload)

    def session_token(self, info: SessionInfo) -> str:
        payload = (
            _HEAD.pack(KIND_SESSION, info.nonce, info.issued_ms)
            + struct.pack(">Q", info.expires_ms)
            + _name(info.floor)
        )
        return self._seal(payload)

    # -- verifying -------------------------------------------------------------------------

    def _open(self, text: str, kind: int) -> bytes:
        if len(text) > MAX_TEXT or text.count(".") != 1:
            raise InvalidTokenError("malformed")
        body, _, tag = text.partition(".")
        try:
            payload, mac = _unb64(body), _unb64(tag)
        except (binascii.Error, ValueError):
            raise InvalidTokenError("malformed") from None
        if len(mac) != MAC_BYTES or len(payload) < _HEAD.size:
            raise InvalidTokenError("malformed")
        for keyed in self._macs:
            m = keyed.copy()
            m.update(payload)
            if hmac.compare_digest(m.digest()[:MAC_BYTES], mac):
                break
        else:
            raise InvalidTokenError("bad signature")
        if payload[0] != kind:
            raise InvalidTokenError("wrong kind")
        return payload

    def verify_request_id(self, text: str) -> RequestInfo:
        payload = self._open(text, KIND_REQUEST)
        start = _HEAD.size + _REQUEST.size
        if len(payload) < start:
            raise InvalidTokenError("truncated")
        _, nonce, issued = _HEAD.unpack_from(payload)
        generation, score, flags = _REQUEST.unpack_from(payload, _HEAD.size)
        context, decided, served = _names(payload, start, 3)
        return RequestInfo(
            nonce=nonce,
            issued_ms=issued,
            generation=generation,
            score=score,
            context=context,
            decided=decided,
            served=served or None,
            forced=bool(flags & FLAG_FORCED),
            sticky=bool(flags & FLAG_STICKY),
        )

    def verify_session(self, text: str) -> SessionInfo:
        payload = self._open(text, KIND_SESSION)
        start = _HEAD.size + 8
        if len(payload) < start:
            raise InvalidTokenError("truncated")
        _, nonce, issued = _HEAD.unpack_from(payload)
        (expires,) = struct.unpack_from(">Q", payload, _HEAD.size)
        (floor,) = _names(payload, start, 1)
        return SessionInfo(nonce=nonce, issued_ms=issued, floor=floor, expires_ms=expires)
