"""Rounds as they finish: a tracker that hands each round's metrics to a callback, and the
file through which a task in another process streams them (``flame.launch --rounds-file``).

``flame.simulate(..., on_round=print)`` and ``flamectl run --local`` use these, so a local run
prints every round when it ends, in one process or one process per task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from flame.tensors import Weights
from flame.tracking import Tracker, TrackingResult

if TYPE_CHECKING:
    from flame.serving.model_card import ModelCard

log = structlog.get_logger(__name__)

OnRound = Callable[[dict[str, Any]], None]


class RoundTee:
    """Wraps a tracker: every ``log_round`` is also given to ``on_round`` as
    ``{"round": step, **metrics}`` (the shape of ``SimulationResult.history``). A failing
    callback is logged; it never stops the job."""

    def __init__(self, inner: Tracker, on_round: OnRound) -> None:
        self.inner = inner
        self.on_round = on_round

    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        self.inner.start(params, tags)

    def log_round(self, rnd: int, metrics: dict[str, float]) -> None:
        try:
            self.on_round({"round": rnd, **metrics})
        except Exception as exc:
            log.warning("rounds.callback_failed", error=repr(exc))
        self.inner.log_round(rnd, metrics)

    def offer_model(self, rnd: int, weights: Weights, metrics: dict[str, float]) -> None:
        self.inner.offer_model(rnd, weights, metrics)

    def log_json(self, name: str, data: dict[str, Any]) -> None:
        self.inner.log_json(name, data)

    def describe_model(self, card: ModelCard) -> None:
        self.inner.describe_model(card)

    def finish(self, status: str = "FINISHED") -> TrackingResult:
        return self.inner.finish(status)


class RoundWriter:
    """``on_round`` for a task in its own process: appends one JSON line per round to a file
    and flushes it, so the parent can follow it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __call__(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(entry, default=float) + "\n")


class RoundReader:
    """Follows a :class:`RoundWriter`'s file: each :meth:`read` returns the complete lines
    written since the last one (a line still being written waits for the next read)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        entries = []
        for line in data[:end].splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                entries.append(value)
        return entries
