"""Reports that were not acknowledged yet, kept in order until they are.

An :class:`Outbox` holds JSON-able batches first in, first out. At most ``memory_limit``
batches sit in memory; further ones go to a JSON-lines file (in the task's folder), so an
outage of the control plane that lasts a long job costs disk, not memory. The oldest batch is
always sent first; :meth:`pop` drops it once it was acknowledged. Batches a previous process
of the task left in the file are sent first.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

Batch = dict[str, Any]


class Outbox:
    def __init__(self, spill: Path | None = None, memory_limit: int = 256) -> None:
        if memory_limit < 1:
            raise ValueError("memory_limit must be at least 1")
        self._memory: deque[Batch] = deque()
        self._spill = spill
        # batches in the spill file, all newer than those in memory; what an earlier process
        # of the task left there (it was killed before they were acknowledged) goes first
        self._spilled = _lines(spill) if spill is not None else 0
        self._limit = memory_limit

    def __len__(self) -> int:
        return len(self._memory) + self._spilled

    @property
    def in_memory(self) -> int:
        return len(self._memory)

    def put(self, batch: Batch) -> None:
        if self._spill is None or (len(self._memory) < self._limit and not self._spilled):
            self._memory.append(batch)
            return
        self._spill.parent.mkdir(parents=True, exist_ok=True)
        with self._spill.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(batch, separators=(",", ":")) + "\n")
        self._spilled += 1

    def peek(self) -> Batch | None:
        """The oldest batch not yet acknowledged."""
        if not self._memory and self._spilled:
            self._refill()
        return self._memory[0] if self._memory else None

    def peek_many(self, limit: int) -> list[Batch]:
        """The oldest batches not yet acknowledged, at most ``limit`` (at least the oldest one
        when there is one; fewer than ``limit`` may be in memory)."""
        if self.peek() is None:
            return []
        return [self._memory[i] for i in range(min(limit, len(self._memory)))]

    def pop(self, count: int = 1) -> None:
        """The oldest ``count`` batches were acknowledged."""
        for _ in range(count):
            if self.peek() is None:
                return
            self._memory.popleft()

    def _refill(self) -> None:
        """Move the oldest spilled batches into memory (what stays is written back)."""
        assert self._spill is not None
        lines = self._spill.read_text(encoding="utf-8").splitlines()
        take, rest = lines[: self._limit], lines[self._limit :]
        self._memory.extend(json.loads(line) for line in take)
        if rest:
            tmp = self._spill.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in rest), encoding="utf-8")
            tmp.replace(self._spill)
        else:
            self._spill.unlink(missing_ok=True)
        self._spilled = len(rest)


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        return 0
