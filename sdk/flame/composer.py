"""Compose a role's work from tasklets: ``init >> Loop(until=done)(fetch >> train >> upload)``.

A :class:`Tasklet` wraps one step (a sync or async callable without arguments); ``>>`` chains
steps into a :class:`Chain`; :class:`Loop` repeats a chain until its predicate is true. Running a
chain awaits each step in order on the caller's event loop: there are no timers and no polling,
a step that waits for a message simply awaits the channel.

Plain bound methods may appear in a chain next to a tasklet (``self.fetch >> self.train``), so
user overrides such as ``train()`` need no decorator. Inside a role, :func:`tasklet` turns a
method into a tasklet when it is read from the instance.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any, Generic, TypeVar, overload

Step = Callable[[], Any]  # returns None or an awaitable
Predicate = Callable[[], bool]


class Composable:
    """Anything that can be run and chained."""

    async def run(self) -> None:
        raise NotImplementedError

    def __rshift__(self, other: Composable | Step) -> Chain:
        return Chain([self, as_composable(other)])

    def __rrshift__(self, other: Step) -> Chain:
        return Chain([as_composable(other), self])


class Tasklet(Composable):
    """One step of a role."""

    def __init__(self, fn: Step, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"a tasklet needs a callable, got {fn!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", repr(fn))

    async def run(self) -> None:
        result = self.fn()
        if result is not None and (type(result) is CoroutineType or inspect.isawaitable(result)):
            await result

    def __repr__(self) -> str:
        return f"Tasklet({self.name})"


class Chain(Composable):
    """Steps run one after the other."""

    def __init__(self, steps: list[Composable]) -> None:
        flat: list[Composable] = []
        for step in steps:
            flat.extend(step.steps if isinstance(step, Chain) else [step])
        self.steps: list[Composable] = flat

    async def run(self) -> None:
        for step in self.steps:
            await step.run()

    def __repr__(self) -> str:
        return " >> ".join(repr(s) for s in self.steps)


class LoopBody(Composable):
    """A chain repeated until a predicate holds (checked before each pass)."""

    def __init__(self, body: Composable, until: Predicate) -> None:
        self.body = body
        self.until = until

    async def run(self) -> None:
        while not self.until():
            await self.body.run()

    def __repr__(self) -> str:
        return f"Loop({self.body!r})"


class Loop:
    """``Loop(until=predicate)(chain)`` repeats ``chain`` while ``predicate()`` is false."""

    def __init__(self, until: Predicate) -> None:
        self.until = until

    def __call__(self, body: Composable | Step) -> LoopBody:
        return LoopBody(as_composable(body), self.until)


def as_composable(step: Composable | Step) -> Composable:
    if isinstance(step, Composable):
        return step
    if callable(step):
        return Tasklet(step)
    raise TypeError(f"cannot compose {step!r}")


T = TypeVar("T")


class tasklet(Generic[T]):
    """Method decorator: ``self.fetch`` returns a :class:`Tasklet` bound to the instance."""

    def __init__(self, fn: Callable[[T], Awaitable[None] | None]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.name = fn.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> tasklet[T]: ...

    @overload
    def __get__(self, obj: T, owner: type) -> Tasklet: ...

    def __get__(self, obj: T | None, owner: type) -> tasklet[T] | Tasklet:
        if obj is None:
            return self
        fn = self.fn
        return Tasklet(lambda: fn(obj), name=self.name)
