"""A bounded LRU cache whose entries expire: DNS answers must not outlive their TTL."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    __slots__ = ("_data", "hits", "max_size", "misses")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._data: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, now: float) -> V | None:
        item = self._data.get(key)
        if item is None:
            self.misses += 1
            return None
        expires, value = item
        if now >= expires:
            del self._data[key]
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: V, ttl: float, now: float) -> None:
        if self.max_size <= 0 or ttl <= 0:
            return
        data = self._data
        data[key] = (now + ttl, value)
        data.move_to_end(key)
        while len(data) > self.max_size:
            data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()
