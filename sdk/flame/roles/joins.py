"""How many of a round's participants have joined, kept up to date one message at a time.

The aggregator's collect step starts the round's clock once ``min_trainers`` of its
participants (all of them, if fewer) have joined; counting them again for every message made a
round quadratic in the number of trainers (issue 21). :class:`JoinCount` counts once, then
adds each newly joined participant as its message arrives.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping


class JoinCount:
    """Joined participants of one round. ``joined`` is the aggregator's live mapping of joined
    peers; call :meth:`note` after each message so a new join is counted."""

    def __init__(self, participants: Collection[str], joined: Mapping[str, int], need: int) -> None:
        self._joined = joined
        self._waiting = {p for p in participants if p not in joined}
        self._count = len(participants) - len(self._waiting)
        self.need = min(need, len(participants))

    @property
    def count(self) -> int:
        return self._count

    @property
    def enough(self) -> bool:
        """Have ``need`` participants joined (may the round's clock start)?"""
        return self._count >= self.need

    def note(self, peer: str) -> None:
        """``peer`` sent a message: count it if it is a participant that has now joined."""
        if peer in self._waiting and peer in self._joined:
            self._waiting.discard(peer)
            self._count += 1
