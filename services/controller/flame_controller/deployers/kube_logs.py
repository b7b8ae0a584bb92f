"""Reading a task pod's log in pieces: where the last shipped piece ended (a timestamp and
how many lines carried it, kept in an annotation of the Job) and which lines of a new read come
after it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import structlog

from .kube_status import parse_timestamp

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Position:
    """After which log line output continues: a line's timestamp (ns since the epoch) and how
    many lines carrying exactly that timestamp were shipped."""

    ns: int = 0
    same: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"ns": self.ns, "n": self.same}

    @classmethod
    def of(cls, raw: object) -> Position:
        try:
            if isinstance(raw, str):
                raw = json.loads(raw)
            if isinstance(raw, dict):
                return cls(int(raw.get("ns", 0)), int(raw.get("n", 0)))
        except (ValueError, TypeError):
            pass
        return cls()

    def key(self) -> tuple[int, int]:
        return (self.ns, self.same)


def take_lines(
    text: str,
    position: Position,
    lines: list[tuple[str, str]],
    *,
    final: bool,
    max_lines: int,
    max_chars: int,
) -> tuple[Position, bool]:
    """Append the lines of ``text`` that come after ``position`` (complete lines only unless
    ``final``; at most ``max_lines`` in all). Returns the new position and whether
    all of ``text`` was taken."""
    entries = text.split("\n")
    tail = entries.pop()  # "" when the text ends with a newline
    if tail and final:
        entries.append(tail)
    run_ns, run = -1, 0  # lines so far with the same timestamp
    for entry in entries:
        stamp, _, line = entry.partition(" ")
        ns = parse_timestamp(stamp)
        if ns is None:
            log.warning("deployer.log_line_without_timestamp", line=entry[:200])
            continue
        run = run + 1 if ns == run_ns else 1
        run_ns = ns
        if (ns, run) <= position.key():
            continue  # shipped before
        if len(lines) >= max_lines:
            return position, False
        lines.append(("stdout", line[:max_chars]))
        position = Position(ns, run)
    return position, True
