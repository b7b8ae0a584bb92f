"""Tasklet composition: order, loops, sync and async steps, plain methods in chains."""

from __future__ import annotations

import asyncio

import pytest

from flame.composer import Chain, Loop, Tasklet, tasklet


class Recorder:
    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.n = 0
        self.events: list[str] = []

    @tasklet
    def init(self) -> None:
        self.events.append("init")

    @tasklet
    async def fetch(self) -> None:
        await asyncio.sleep(0)
        self.n += 1
        self.events.append(f"fetch{self.n}")

    def train(self) -> None:  # a plain method, as a user override would be
        self.events.append(f"train{self.n}")

    @tasklet
    def upload(self) -> None:
        self.events.append(f"upload{self.n}")

    @tasklet
    def finish(self) -> None:
        self.events.append("finish")

    def done(self) -> bool:
        return self.n >= self.rounds

    def compose(self) -> Chain:
        return (
            self.init
            >> Loop(until=self.done)(self.fetch >> self.train >> self.upload)
            >> self.finish
        )


async def test_chain_runs_like_the_algorithm_reads() -> None:
    r = Recorder(rounds=2)
    await r.compose().run()
    assert r.events == [
        "init",
        "fetch1",
        "train1",
        "upload1",
        "fetch2",
        "train2",
        "upload2",
        "finish",
    ]


async def test_loop_checks_its_predicate_before_each_pass() -> None:
    r = Recorder(rounds=0)
    await r.compose().run()
    assert r.events == ["init", "finish"]


async def test_each_tasklet_is_bound_to_its_own_instance() -> None:
    a, b = Recorder(1), Recorder(1)
    await (a.init >> b.init).run()
    assert a.events == ["init"] and b.events == ["init"]


async def test_errors_stop_the_chain() -> None:
    seen: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    chain = Tasklet(lambda: seen.append("a")) >> boom >> Tasklet(lambda: seen.append("c"))
    with pytest.raises(RuntimeError, match="boom"):
        await chain.run()
    assert seen == ["a"]


def test_non_callables_cannot_be_composed() -> None:
    with pytest.raises(TypeError):
        Tasklet(lambda: None) >> 42  # type: ignore[operator]
