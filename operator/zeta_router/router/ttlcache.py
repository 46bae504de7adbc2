"""A bounded LRU map whose entries expire after a TTL.

Used for conversation stickiness and for remembering recent requests for feedback. Memory is
bounded by ``max_entries`` (least recently used entries go first); time comes from the caller so
that tests do not sleep.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    __slots__ = ("_data", "max_entries", "ttl")

    def __init__(self, max_entries: int, ttl: float) -> None:
        if max_entries < 0 or ttl < 0:
            raise ValueError("max_entries and ttl must be >= 0")
        self.max_entries = max_entries
        self.ttl = ttl
        self._data: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, now: float) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: str, value: V, now: float) -> None:
        if self.max_entries == 0 or self.ttl == 0:
            return
        self._data[key] = (now + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def resize(self, max_entries: int, ttl: float) -> None:
        """Apply new limits (on config reload) without losing what still fits."""
        self.max_entries = max_entries
        self.ttl = ttl
        while len(self._data) > max_entries:
            self._data.popitem(last=False)
