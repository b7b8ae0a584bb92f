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

DEFAULT_TEXT_BYTES = 8 << 20  # stored text behind the records kept, per store


class DecodedRecords:
    """A least-recently-used map of (kind, stored text) -> record, bounded by the total size of
    the texts (a decoded record takes a few times its text in memory)."""

    def __init__(self, text_bytes: int = DEFAULT_TEXT_BYTES) -> None:
        self.text_bytes = text_bytes
        self._items: OrderedDict[tuple[str, str], Record] = OrderedDict()
        self._held = 0  # characters of text behind the records kept

    def get(self, kind: str, model: type[R], text: str, decode: Callable[[str], R]) -> R:
        key = (kind, text)
        found = self._items.get(key)
        if isinstance(found, model):
            self._items.move_to_end(key)
            return found
        record = decode(text)
        if len(text) > self.text_bytes:
            return record
        if found is not None:  # the same text read as another model: this one replaces it
            del self._items[key]
            self._held -= len(text)
        self._items[key] = record
        self._held += len(text)
        while self._held > self.text_bytes:
            (_, dropped), _ = self._items.popitem(last=False)
            self._held -= len(dropped)
        return record

    def __len__(self) -> int:
        return len(self._items)
