"""Records a text backend has read before, by the exact text they were read from.

Listing the same page again (a dashboard, or ``flamectl`` polling) would parse and validate
every unchanged document again: for a page of 40 jobs that was most of what the controller
spent on the request. A record is a pure function of its kind and stored text, and records
are frozen, so the same object can be handed out again without a copy. Any change to a
document changes its text, so a changed document is never answered from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flame_controller.store.records import Record
from flame_service.lru import Lru

R = TypeVar("R", bound=Record)

DEFAULT_TEXT_BYTES = 8 << 20  # stored text behind the records kept, per store


class DecodedRecords:
    """A least-recently-used map of (kind, stored text) -> record, bounded by the total size of
    the texts (a decoded record takes a few times its text in memory)."""

    def __init__(self, text_bytes: int = DEFAULT_TEXT_BYTES) -> None:
        self._items: Lru[tuple[str, str], Record] = Lru(text_bytes)

    def get(self, kind: str, model: type[R], text: str, decode: Callable[[str], R]) -> R:
        found = self._items.get((kind, text))
        if isinstance(found, model):
            return found
        record = decode(text)  # the same text read as another model: this one replaces it
        self._items.put((kind, text), record, weight=len(text))
        return record

    def __len__(self) -> int:
        return len(self._items)
