"""An in-process LRU of decoded lists with hit/miss counters (keys include the version)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

_MISSING = object()


class LRUCache:
    """Least-recently-used mapping; ``get`` counts hits and misses. Not thread-safe (one loop)."""

    def __init__(self, capacity: int):
        self.capacity = max(0, int(capacity))
        self._data: OrderedDict[tuple, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, default: Any = _MISSING) -> Any:
        try:
            value = self._data[key]
        except KeyError:
            self.misses += 1
            return None if default is _MISSING else default
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: tuple, value: Any) -> None:
        if not self.capacity:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def clear(self) -> int:
        n = len(self._data)
        self._data.clear()
        return n

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / total if total else 0.0,
            "keys": len(self._data),
            "capacity": self.capacity,
        }
