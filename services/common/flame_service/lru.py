"""A least-recently-used map bounded by the total weight of what it keeps (by default, each
entry weighs 1: a bound on the count)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, weight: int = 1) -> None:
        """Keep ``value`` (replacing what ``key`` held); the least recently used go until the
        total fits. A value heavier than the whole capacity is not kept."""
        old = self._items.pop(key, None)
        if old is not None:
            self._weight -= old[1]
        if weight > self.capacity:
            return
        self._items[key] = (value, weight)
        self._weight += weight
        while self._weight > self.capacity:
            _, (_, dropped) = self._items.popitem(last=False)
            self._weight -= dropped

    def __len__(self) -> int:
        return len(self._items)
