"""Folding a round's updates as they arrive, in sender order (issue 21: big models in bounded
memory).

An aggregator hands each validated update to :class:`SenderOrder`, which adds it to the round's
running aggregate at once when every participant before it (by name) has been dealt with, and
otherwise holds it until they have. Adding in sender order keeps the result bit-identical
whatever order the network delivers updates in (as :func:`flame.aggregation.base.canonical`
does for the batch path): a resumed run ends with the same model as an undisturbed one.

Held updates stay in memory up to ``hold_bytes`` in total; beyond that they are written to a
folder on disk and read back when their turn comes, so a slow first participant does not make
the aggregator hold every other update in memory: the aggregator keeps the global model, the
running sum and one update in hand, plus at most ``hold_bytes``.

:class:`GroupMean` is a middle aggregator's fold (its group's sample-weighted mean).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np

from flame.aggregation.base import pack_extras, split_extras
from flame.aggregation.streaming import RunningSum, nbytes
from flame.errors import AggregationError
from flame.tensors import Weights


class Answer(Protocol):
    """What :class:`SenderOrder` needs of an update (a dataclass)."""

    @property
    def sender(self) -> str: ...

    @property
    def weights(self) -> Weights: ...

    @property
    def extras(self) -> Weights: ...


class GroupAnswer(Answer, Protocol):
    """What :class:`GroupMean` needs of an answer: its samples and the share of its work done."""

    @property
    def num_samples(self) -> float: ...

    @property
    def work(self) -> float: ...


A = TypeVar("A", bound=Answer)


class SenderOrder(Generic[A]):
    """Adds the answers of ``senders`` with ``add`` in sender order, holding early arrivals."""

    def __init__(
        self,
        add: Callable[[A], None],
        senders: Iterable[str],
        *,
        hold_bytes: int,
        spill_dir: str | Path | None = None,
    ) -> None:
        self._add = add
        self._members = frozenset(senders)  # membership in O(1): a round may have 10,000
        self._order = sorted(self._members)
        self._next = 0  # index in _order of the first sender not yet dealt with
        self._held: dict[str, A] = {}
        self._held_bytes = 0
        # sender -> (the answer without its tensors, their folder, their names in file order)
        self._spilled: dict[str, tuple[A, Path, list[str]]] = {}
        self._gone: set[str] = set()  # senders that will add nothing this round
        self.hold_bytes = hold_bytes
        self._spill_parent = spill_dir
        self._spill_dir: Path | None = None
        self.peak_held = 0  # most answers held at once (memory and disk), for tests and logs

    def offer(self, answer: A) -> None:
        """``answer`` arrived: add it now if its turn has come, else hold it."""
        if answer.sender not in self._members:
            raise AggregationError(f"{answer.sender!r} is not a participant of this round")
        if self._is_next(answer.sender):  # its turn: added at once, never held
            self._add(answer)
            self._next += 1
            self._drain(from_disk=False)
            return
        size = nbytes(answer.weights) + nbytes(answer.extras)
        if self._held_bytes + size <= self.hold_bytes:
            self._held[answer.sender] = answer
            self._held_bytes += size
        else:
            self._spill(answer)
        self._drain(from_disk=False)
        self.peak_held = max(self.peak_held, len(self._held) + len(self._spilled))

    def skip(self, sender: str) -> None:
        """``sender`` adds nothing this round (declined, rejected, gave up)."""
        self._gone.add(sender)
        self._drain(from_disk=False)

    def close(self) -> None:
        """The round is over: whoever has not answered never will; add what is held (call it
        with no update in hand)."""
        self._gone.update(self._order)
        try:
            self._drain(from_disk=True)
        finally:
            self._held.clear()
            self._spilled.clear()
            if self._spill_dir is not None:
                shutil.rmtree(self._spill_dir, ignore_errors=True)
                self._spill_dir = None

    def _is_next(self, sender: str) -> bool:
        return self._next < len(self._order) and self._order[self._next] == sender

    def _drain(self, *, from_disk: bool) -> None:
        """Add every answer whose turn has come. Answers on disk are read back only when the
        round is over (``from_disk``): until then a caller may have an update in hand, and
        reading one back beside it would need a fourth model's memory."""
        while self._next < len(self._order):
            sender = self._order[self._next]
            if sender in self._held:
                answer = self._held.pop(sender)
                self._held_bytes -= nbytes(answer.weights) + nbytes(answer.extras)
                self._add(answer)
                del answer  # the fold has it: nothing here keeps its tensors alive
            elif sender in self._spilled:
                if not from_disk:
                    return
                self._add(self._unspill(sender))
            elif sender not in self._gone:
                return
            self._next += 1

    def _spill(self, answer: A) -> None:
        """Write ``answer``'s tensors to disk, one ``.npy`` file each: NumPy writes an array
        straight from its memory and reads it straight into a new one, where a serialised
        container (safetensors) would build a second copy of the whole update first."""
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="held-", dir=self._spill_parent))
        folder = self._spill_dir / str(len(self._spilled))
        folder.mkdir()
        tensors = pack_extras(answer.weights, answer.extras)
        for i, array in enumerate(tensors.values()):
            np.save(folder / f"{i}.npy", array, allow_pickle=False)
        bare = dataclasses.replace(answer, weights={}, extras={})  # type: ignore[type-var]
        self._spilled[answer.sender] = (bare, folder, list(tensors))

    def _unspill(self, sender: str) -> A:
        bare, folder, names = self._spilled.pop(sender)
        tensors = {n: np.load(folder / f"{i}.npy", allow_pickle=False) for i, n in enumerate(names)}
        shutil.rmtree(folder)
        weights, extras = split_extras(tensors)
        return dataclasses.replace(bare, weights=weights, extras=extras)  # type: ignore[type-var]


class GroupMean:
    """A middle aggregator's fold: its group's mean of weights (and of extras, e.g. SCAFFOLD's
    control-variate deltas), each answer weighted by the samples it trained on times the share
    of its work it did, the plain mean when no answer did any work."""

    def __init__(self, global_weights: Weights, extras: Weights) -> None:
        self.weights = RunningSum(global_weights, uniform_if_unweighted=True)
        # Without extras from above (SCAFFOLD's first round) the first answer's set the names.
        self.extras = RunningSum(extras, uniform_if_unweighted=True) if extras else None
        self.with_extras: bool | None = bool(extras) or None  # None: decided by the first answer

    def check(self, answer: GroupAnswer) -> None:
        self.weights.check(answer.weights, answer.sender)
        if self.with_extras is not None and bool(answer.extras) != self.with_extras:
            raise AggregationError(
                f"update from {answer.sender!r} "
                + ("has no extras" if self.with_extras else "has extras the others have not")
            )
        if self.extras is not None:
            self.extras.check(answer.extras, answer.sender, "extra ")

    def add(self, answer: GroupAnswer) -> None:
        self.check(answer)
        if self.with_extras is None:
            self.with_extras = bool(answer.extras)
            if answer.extras:
                self.extras = RunningSum(answer.extras, uniform_if_unweighted=True)
        weight = answer.num_samples * answer.work  # partial work counts with its share
        self.weights.add(answer.weights, weight)
        if self.extras is not None:
            self.extras.add(answer.extras, weight)

    def result(self) -> tuple[Weights, Weights | None]:
        """The group's mean weights, and mean extras (None if the answers carried none)."""
        return self.weights.result(), None if self.extras is None else self.extras.result()
