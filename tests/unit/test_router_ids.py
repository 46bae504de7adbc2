"""Signed request ids and session tokens: any replica with the key reads them, nobody without
it can make or alter one."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from zeta_router.router.ids import (
    InvalidTokenError,
    KeyFileError,
    RequestInfo,
    SessionInfo,
    Signer,
    key_id,
)
from zeta_router.router.reload import KeyWatcher

KEY = b"0123456789abcdef0123456789abcdef"

INFO = RequestInfo(
    nonce=bytes(range(8)),
    issued_ms=1_760_000_000_123,
    generation=42,
    score=0.61803,
    context="ZetaHRM",
    decided="small",
    served="large",
    forced=False,
    sticky=True,
)


def test_a_request_id_round_trips_through_another_replica() -> None:
    rid = Signer([KEY]).request_id(INFO)
    got = Signer([KEY]).verify_request_id(rid)  # a different process, the same key
    assert got.nonce == INFO.nonce
    assert got.issued_ms == INFO.issued_ms
    assert got.generation == 42
    assert got.score == pytest.approx(INFO.score, abs=1e-7)
    assert (got.context, got.decided, got.served) == ("ZetaHRM", "small", "large")
    assert (got.forced, got.sticky) == (False, True)
    assert rid.isascii()
    assert rid.isprintable()
    assert len(rid) < 100


def test_ids_of_one_request_share_their_beginning() -> None:
    s = Signer([KEY])
    a = s.request_id(INFO)
    b = s.request_id(RequestInfo(**{**_fields(INFO), "served": None}))
    assert a != b
    assert a[:20] == b[:20]
    assert s.verify_request_id(b).served is None


def _fields(info: RequestInfo) -> dict[str, object]:
    return {k: getattr(info, k) for k in info.__slots__}


def test_names_of_any_shape_are_carried() -> None:
    s = Signer([KEY])
    info = RequestInfo(**{**_fields(INFO), "context": "ctx.with-dots_and.émoji🙂", "served": "7b"})
    assert s.verify_request_id(s.request_id(info)).context == "ctx.with-dots_and.émoji🙂"


def test_forged_altered_and_foreign_ids_are_refused() -> None:
    s = Signer([KEY])
    rid = s.request_id(INFO)
    body, tag = rid.split(".")
    payload = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload[-1] ^= 1  # the served tier's last letter
    altered = base64.urlsafe_b64encode(bytes(payload)).rstrip(b"=").decode() + "." + tag
    for bad in (
        altered,
        Signer([b"another key of the same length!!"]).request_id(INFO),
        rid + "x",
        rid.replace(".", ""),
        "",
        "a.b",
        "!!!.???",
        "x" * 5000,
        s.session_token(SessionInfo(INFO.nonce, 1, "large", 2)),  # a token is not an id
    ):
        with pytest.raises(InvalidTokenError):
            s.verify_request_id(bad)


def test_rotation_signs_with_the_first_key_and_verifies_with_all() -> None:
    old, new = Signer([KEY]), Signer([b"n" * 32, KEY])
    assert new.verify_request_id(old.request_id(INFO)).served == "large"
    with pytest.raises(InvalidTokenError):
        old.verify_request_id(new.request_id(INFO))


def test_key_files(tmp_path: Path) -> None:
    f = tmp_path / "key"
    f.write_bytes(b"\n  " + KEY + b"  \n" + b"b" * 20 + b"\n")
    s = Signer.from_file(f)
    assert s.verify_request_id(Signer([KEY]).request_id(INFO)).context == "ZetaHRM"
    assert not s.ephemeral
    assert Signer.random().ephemeral
    f.write_bytes(b"short\n")
    with pytest.raises(KeyFileError, match="at least 16 bytes"):
        Signer.from_file(f)
    f.write_bytes(b"\n\n")
    with pytest.raises(KeyFileError, match="holds no key"):
        Signer.from_file(f)
    with pytest.raises(KeyFileError, match="cannot read"):
        Signer.from_file(tmp_path / "missing")


def test_a_key_watcher_takes_new_keys_and_keeps_them_over_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    old, new = b"o" * 32, b"n" * 32
    path.write_bytes(old + b"\n")
    signer = Signer.from_file(path)
    seen: list[tuple[str, ...]] = []
    watcher = KeyWatcher(path, signer, on_keys=lambda s: seen.append(s.key_ids))
    assert not watcher.poll()  # what it started with
    issued = signer.request_id(INFO)
    path.write_bytes(new + b"\n" + old + b"\n")
    assert watcher.poll()
    assert seen == [(key_id(new), key_id(old))]
    assert signer.verify_request_id(issued).nonce == INFO.nonce  # old ids still verify
    fresh = signer.request_id(INFO)
    assert Signer([new]).verify_request_id(fresh).nonce == INFO.nonce  # the new key signs
    path.write_bytes(b"short\n")
    assert not watcher.poll()  # refused: the keys in use stay
    assert signer.key_ids == (key_id(new), key_id(old))
    path.unlink()
    assert not watcher.poll()
    assert signer.key_ids == (key_id(new), key_id(old))
