"""Records a text backend has read before, by the exact text they were read from.

Listing the same page again (a dashboard, or ``flamectl`` polling) would parse and validate
every unchanged document again: for a page of 40 jobs that was most of what the controller
spent on the request. A record is a pure function of its kind and stored text, and records
are frozen, so the same object can be handed out again without a copy. Any change to a
document changes its text, so a changed document is never answered from here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from flame_controller.store.records import Record

R = TypeVar("R", bound=Record)

DEFAULT_SIZE = 4096  # records kept per store: a few MB at most


class DecodedRecords:
    """A bounded, least-recently-used map of (kind, stored text) -> record."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], Record] = OrderedDict()

    def get(self, kind: str, model: type[R], text: str, decode: Callable[[str], R]) -> R:
        key = (kind, text)
        found = self._items.get(key)
        if isinstance(found, model):
            self._items.move_to_end(key)
            return found
        record = decode(text)
        self._items[key] = record
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return record

    def __len__(self) -> int:
        return len(self._items)
