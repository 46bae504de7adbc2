"""Hashed word uni- and bigrams of a request: the vocabulary features of the learned scorer.

A request's user-side text (the text the cheap features read, see ``features.analysed_text``)
becomes the *set* of hashed indices of its words and of its pairs of neighbouring words, in
``[0, 2**bits)``. Only those integers are ever kept: no word, no order beyond neighbouring
pairs, no counts (see docs/routing-quality.md, "Privacy").

The hash is fixed and documented, because the operator learns weights from indices computed by
one process and the routers apply them in others:

- a word is a run of letters, lower-cased (the words ``features`` counts); digits and
  punctuation separate words;
- with a key (every router and the operator's learner: the ZetaRouter's n-gram key, see
  :func:`derive_key`), ``h(word)`` is the first 4 bytes, big-endian, of
  ``HMAC-SHA256(key, utf8(word))``; without one (offline evaluation of public data sets only),
  ``h(word) = crc32(utf8(word))``;
- a word's index is ``h(word) mod 2**bits``;
- a pair's index is ``((h(first) * 0x9E3779B1 + h(second)) mod 2**32) >> (32 - bits)``
  (multiplicative hashing: the high bits mix both words).

Indices are sorted and unique; a request without words has none.

Keyed, the indices of a dump of samples cannot be matched against a dictionary without the key:
who holds the dump but not the key learns how many distinct words and pairs each request had
and which requests share words, not which words they are (docs/routing-quality.md, "Privacy").
"""

from __future__ import annotations

import hmac
import itertools
import re
import zlib

import numpy as np
from numpy.typing import NDArray

DEFAULT_BITS = 18
MIN_BITS = 10
MAX_BITS = 24
_PAIR_MULTIPLIER = 0x9E3779B1
_U32 = 0xFFFFFFFF

# The word definition of ``features`` (letters only), for ASCII text and for the rest.
_ASCII_LETTERS_ONLY = "".join(c if c.isalpha() else " " for c in map(chr, range(128)))
_WORD_UNICODE = re.compile(r"[^\W\d_]+")

# crc32 of a word, memoised: most words of a request were seen in earlier requests, and a dict
# lookup costs a fraction of encoding and hashing. Bounded by clearing it when full (the values
# never change, so a cleared entry is only recomputed).
_WORD_HASH: dict[str, int] = {}
_WORD_HASH_MAX = 200_000
#: The same memo for keyed hashes, per key (a router has one key; the operator one per
#: ZetaRouter whose cold-start file it reads).
_KEYED_HASH: dict[bytes, dict[str, int]] = {}
_KEYED_MAX = 4

NGRAM_KEY_CONTEXT = b"zeta-router n-grams"
"""Domain separation of :func:`derive_key`."""

IndexArray = NDArray[np.int64]


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (runs of letters)."""
    lower = text.lower()
    if lower.isascii():
        return lower.translate(_ASCII_LETTERS_ONLY).split()
    return _WORD_UNICODE.findall(lower)


def derive_key(secret: bytes) -> bytes:
    """The n-gram key made of a secret (the ZetaRouter's ``ngram-key``, or its first request
    key where the Secret has none): HMAC-SHA256(secret, "zeta-router n-grams")."""
    return hmac.digest(secret, NGRAM_KEY_CONTEXT, "sha256")


#: A keyed HMAC object per key, copied per word: about half the cost of keying one each time.
_KEYED_MACS: dict[bytes, hmac.HMAC] = {}


def key_id(key: bytes) -> str:
    """A short public name of an n-gram key: samples carry it, so that the learner takes only
    indices hashed with the key it expects (it tells nothing of the key)."""
    return hmac.new(key, b"zeta-router n-gram key id", "sha256").hexdigest()[:12]


def keyed_hash(key: bytes, word: str) -> int:
    """``h(word)`` under ``key`` (see the module docstring)."""
    base = _KEYED_MACS.get(key)
    if base is None:
        if len(_KEYED_MACS) >= _KEYED_MAX:
            _KEYED_MACS.clear()
        base = _KEYED_MACS[key] = hmac.new(key, digestmod="sha256")
    mac = base.copy()
    mac.update(word.encode("utf-8"))
    return int.from_bytes(mac.digest()[:4], "big")


def _hashes(ws: list[str], key: bytes | None = None) -> list[int]:
    """h of each word, through the memo (the per-word work is C-level ``map`` calls)."""
    if key is None:
        cache = _WORD_HASH
    else:
        if key not in _KEYED_HASH and len(_KEYED_HASH) >= _KEYED_MAX:
            _KEYED_HASH.clear()  # the operator hashes for many ZetaRouters, rarely
        cache = _KEYED_HASH.setdefault(key, {})
    missing = set(ws).difference(cache)
    if missing:
        if len(cache) + len(missing) > _WORD_HASH_MAX:
            cache.clear()
        if key is None:
            crc = zlib.crc32
            for w in missing:
                cache[w] = crc(w.encode("utf-8"))
        else:
            for w in missing:
                cache[w] = keyed_hash(key, w)
    return list(map(cache.__getitem__, ws))


def check_bits(bits: int) -> int:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"hash bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    return bits


def indices(text: str, bits: int = DEFAULT_BITS, key: bytes | None = None) -> IndexArray:
    """Sorted unique hashed uni- and bigram indices of ``text`` (see the module docstring)."""
    ws = words(text)
    if not ws:
        return np.zeros(0, dtype=np.int64)
    h = np.array(_hashes(ws, key), dtype=np.uint64)
    uni = h & np.uint64((1 << bits) - 1)
    if h.size > 1:
        pairs = ((h[:-1] * np.uint64(_PAIR_MULTIPLIER) + h[1:]) & np.uint64(_U32)) >> np.uint64(
            32 - bits
        )
        uni = np.concatenate((uni, pairs))
    out: IndexArray = np.unique(uni).astype(np.int64)
    return out


def pack(keys: IndexArray) -> bytes:
    """Sorted unique indices as varint-coded gaps (the compact form samples and models use)."""
    out = bytearray()
    prev = -1
    for k in keys.tolist():
        gap = k - prev - 1
        if gap < 0:
            raise ValueError("indices must be sorted and unique")
        while gap >= 0x80:
            out.append((gap & 0x7F) | 0x80)
            gap >>= 7
        out.append(gap)
        prev = k
    return bytes(out)


def unpack(raw: bytes, count: int | None = None, bits: int = MAX_BITS) -> IndexArray:
    """The indices of :func:`pack` (``count``: exactly that many, the bytes holding nothing
    else). Raises ``ValueError`` naming what is wrong."""
    keys: list[int] = []
    pos, end, prev = 0, len(raw), -1
    while pos < end and (count is None or len(keys) < count):
        shift = value = 0
        while True:
            if pos >= end:
                raise ValueError("indices end in the middle of a number")
            b = raw[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 35:
                raise ValueError("indices hold an overlong number")
        prev += 1 + value
        keys.append(prev)
    if count is not None and len(keys) != count:
        raise ValueError(f"indices hold {len(keys)} numbers, not {count}")
    if pos != end:
        raise ValueError(f"indices hold more than {count} numbers")
    if keys and keys[-1] >= (1 << bits):
        raise ValueError(f"an index is outside [0, 2**{bits})")
    return np.array(keys, dtype=np.int64)


def indices_reference(text: str, bits: int = DEFAULT_BITS, key: bytes | None = None) -> list[int]:
    """The same indices computed with plain integers: the specification ``indices`` must
    match (tests compare them), written for reading rather than speed."""
    hs = [zlib.crc32(w.encode("utf-8")) if key is None else keyed_hash(key, w) for w in words(text)]
    keys = {h % (1 << bits) for h in hs}
    for a, b in itertools.pairwise(hs):
        keys.add(((a * _PAIR_MULTIPLIER + b) % (1 << 32)) >> (32 - bits))
    return sorted(keys)
