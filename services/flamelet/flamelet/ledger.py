"""The task ledger: which task attempts this node has started, and what became of them.

Kept in ``<home>/ledger.json`` and written (atomically) *before* each step takes effect, so a
task attempt is never started twice, also across flamelet restarts: an entry left in
``starting`` by a crash is reported as failed, never started again.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flame_service.files import write_private
from flamelet.errors import FlameletError

LEDGER_FILE = "ledger.json"


class Phase(StrEnum):
    STARTING = "starting"  # recorded before the process is spawned
    RUNNING = "running"  # pid + create_time (+ start_id) known
    DONE = "done"  # exited, refused or lost; ``outcome`` says how


class Entry(BaseModel):
    model_config = ConfigDict(frozen=True)

    task_id: str
    attempt: int
    job_id: str = ""
    workdir: str = ""
    phase: Phase = Phase.STARTING
    pid: int | None = None
    create_time: float | None = None
    start_id: str | None = None  # runner.process_start_id (absent in older ledgers)
    stop_requested: bool = False
    outcome: str = ""  # completed | failed (when phase is done)
    reason: str = ""
    reported: str = ""  # the last state the apiserver accepted (or "gave-up")
    log_offsets: dict[str, int] = Field(default_factory=dict)
    logs_done: bool = False

    @property
    def key(self) -> str:
        return entry_key(self.task_id, self.attempt)

    @property
    def settled(self) -> bool:
        """Nothing left to do: finished, final status reported, logs shipped."""
        return (
            self.phase == Phase.DONE
            and self.reported in (self.outcome, "gave-up")
            and (self.logs_done)
        )

    def with_(self, **changes: Any) -> Entry:
        return self.model_copy(update=changes)


def entry_key(task_id: str, attempt: int) -> str:
    return f"{task_id}#{attempt}"


class _State(BaseModel):
    entries: dict[str, Entry] = Field(default_factory=dict)
    event_seq: int = 0  # the highest notifier seq handled


class Ledger:
    def __init__(self, home: Path) -> None:
        self._path = home / LEDGER_FILE
        try:
            self._state = _State.model_validate_json(self._path.read_text())
        except FileNotFoundError:
            self._state = _State()
        except (OSError, ValueError) as exc:
            raise FlameletError(f"cannot read the task ledger {self._path}: {exc}") from exc

    def _save(self) -> None:
        write_private(self._path, json.dumps(self._state.model_dump(mode="json"), indent=1))

    def get(self, task_id: str, attempt: int) -> Entry | None:
        return self._state.entries.get(entry_key(task_id, attempt))

    def entries(self) -> list[Entry]:
        return list(self._state.entries.values())

    def for_task(self, task_id: str) -> list[Entry]:
        return [e for e in self._state.entries.values() if e.task_id == task_id]

    def put(self, entry: Entry) -> Entry:
        self._state.entries[entry.key] = entry
        self._save()
        return entry

    def update(self, key: str, **changes: Any) -> Entry:
        """Apply ``changes`` to the current entry (never to a stale copy)."""
        return self.put(self._state.entries[key].with_(**changes))

    def remove(self, key: str) -> None:
        if self._state.entries.pop(key, None) is not None:
            self._save()

    def beyond(self, keep: int) -> list[Entry]:
        """The settled entries older than the newest ``keep`` settled ones (oldest first).
        Forgetting them is safe: the control plane has accepted their final state, so it never
        offers those attempts again."""
        settled = [e for e in self._state.entries.values() if e.settled]
        return settled[: max(0, len(settled) - keep)]

    def forget(self, keys: list[str]) -> None:
        dropped = [self._state.entries.pop(k, None) for k in keys]
        if any(d is not None for d in dropped):
            self._save()

    @property
    def event_seq(self) -> int:
        return self._state.event_seq

    def handled_event(self, seq: int) -> None:
        if seq > self._state.event_seq:
            self._state.event_seq = seq
            self._save()
