"""The coordinator (coordinated topology): each round it assigns the trainers to the middle
aggregators and tells both sides, then waits for the top aggregator's end-of-round signal.

    init >> Loop(until=done)(assign >> await_round_end) >> finish

Assignment: the trainers, shuffled with a generator seeded by (job seed, round), dealt round-robin
to the middle aggregators (sorted by task id), so every run of the job assigns the same way and a
middle aggregator gets at least one trainer whenever there are enough trainers. Override
:meth:`Coordinator.plan_round` to assign differently (e.g. by measured latency).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from flame.composer import Composable, Loop, tasklet
from flame.errors import FlameError
from flame.protocol import Assign, RoundEnd
from flame.roles.base import Role
from flame.roles.topology import role_tiers


class Coordinator(Role):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tiers = role_tiers(self.config.design)
        top_tier = max(tiers.values())
        self.trainers: list[str] = []
        self.middles: list[str] = []
        self.top: str | None = None
        self.channel_of: dict[str, str] = {}
        for name in self.config.channels:
            a, b = self.config.design.channel(name).pair
            other = b if a == self.config.role else a
            for peer in self.config.peers(name):
                self.channel_of[peer] = name
                if tiers.get(other) == 0:
                    self.trainers.append(peer)
                elif tiers.get(other) == top_tier:
                    self.top = peer
                else:
                    self.middles.append(peer)
        self.trainers.sort()
        self.middles.sort()
        if self.top is None or not self.middles or not self.trainers:
            raise FlameError("a coordinator needs channels to trainers, middle and top aggregators")

    def compose(self) -> Composable:
        return (
            self.init >> Loop(until=self.done)(self.assign >> self.await_round_end) >> self.finish
        )

    def plan_round(self, rnd: int) -> dict[str, list[str]]:
        """Middle aggregator -> trainers it serves in round ``rnd``."""
        rng = np.random.default_rng([self.config.job.seed, rnd])
        order = [self.trainers[i] for i in rng.permutation(len(self.trainers))]
        plan: dict[str, list[str]] = {m: [] for m in self.middles}
        for i, trainer in enumerate(order):
            plan[self.middles[i % len(self.middles)]].append(trainer)
        return plan

    @tasklet
    def init(self) -> None:
        self.initialize()

    @tasklet
    async def assign(self) -> None:
        self.round += 1
        plan = self.plan_round(self.round)
        sends = []
        for middle, trainers in plan.items():
            sends.append(self._send(middle, Assign(round=self.round, trainers=sorted(trainers))))
            sends.extend(
                self._send(trainer, Assign(round=self.round, aggregator=middle))
                for trainer in trainers
            )
        await asyncio.gather(*sends)
        self.log.info("round.assigned", round=self.round, plan=plan)

    async def _send(self, peer: str, assign: Assign) -> None:
        await self.channels[self.channel_of[peer]].send(peer, assign.message())

    @tasklet
    async def await_round_end(self) -> None:
        assert self.top is not None
        msg = await self.recv_from(self.channel_of[self.top], self.top, "end of round")
        end = RoundEnd.expect(msg)
        self.history.append({"round": end.round, "final": end.final})
        if end.final:
            self.finished = True

    @tasklet
    def finish(self) -> None:
        self.log.info("coordinator.finished", rounds=self.round)

    async def on_failure(self, exc: FlameError) -> None:
        for name in sorted(set(self.channel_of.values())):
            await self.notify_abort(name, exc)
