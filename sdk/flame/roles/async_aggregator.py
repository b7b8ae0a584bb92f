"""Asynchronous (FedBuff) top aggregator, built from the synchronous one's pieces:

    init >> Loop(until=done)(dispatch >> collect_one >> apply) >> finish

``dispatch`` keeps up to the selector's concurrency of trainers busy, each with the current
global model; ``collect_one`` waits (event-driven) for the next update from any busy trainer,
validates it and hands it to the strategy's buffer; ``apply`` flushes the buffer when it holds
``k`` updates, which makes a new global model (one "round"). After ``spec.rounds`` flushes the
final model goes to every trainer and their evaluations are collected, as in the synchronous
chain. A trainer silent for ``round_timeout`` is dropped from the pool (re-admitted if it speaks
again); with fewer live trainers than ``min_trainers`` it waits for silent ones to come back,
for at most the job's ``quorum_grace``, then :class:`QuorumLost`. Until ``min_trainers``
of the busy trainers (all, if fewer) have joined, the wait is ``max_run_time`` instead, so slow
task start-up is no timeout.

Restarts: the checkpoint is written at each flush (round, model, the empty buffer, the models
of the last ``max_staleness`` rounds, the selector and its RNG). A restarted aggregator ends
with the undisturbed model only where the job is deterministic at all, which FedBuff is only
with one trainer at a time (selector ``c`` = 1): with more, which updates fill a buffer, and
how stale each is, follows from the order they arrive in, i.e. from timing. Even ``k`` = ``c``
= the number of trainers is not enough: a trainer that answers is handed the current model
again at once and may take two places in the buffer before a slower one answers. With
``c`` = 1 the resumed aggregator replays the same sequence of trainers and models, provided a
trainer's answer follows from the model and round it gets (the kept-answer rule of synchronous
rounds is off here: FedBuff may hand a trainer the same model twice on purpose). An answer for
an older model than the one a trainer is busy with (one it finished for the killed attempt,
then gave again to the resumed one) is dropped as stale (``update.stale``), never taken as its
answer to the current model.
"""

from __future__ import annotations

import math
from typing import Any

from flame.aggregation.fedbuff import FedBuff
from flame.composer import Composable, Loop, tasklet
from flame.config import TaskConfig
from flame.errors import FlameError, PeerTimeout, RejectedUpdate
from flame.protocol import Abort, Decline, Join, Model, Update
from flame.roles.aggregator import Aggregator, Received
from flame.roles.base import pack, weighted_metrics


def is_async_job(config: TaskConfig) -> bool:
    return config.job.optimizer.name == "fedbuff"


class AsyncAggregator(Aggregator):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_top:
            raise FlameError("asynchronous aggregation needs a top aggregator")
        self.in_flight: dict[str, int] = {}  # trainer -> version of the model it trains on
        self.buffered: list[Received] = []
        self._flushed = False
        if not isinstance(self.strategy, FedBuff):
            raise FlameError("asynchronous aggregation needs the fedbuff optimizer")
        self.buffer: FedBuff = self.strategy

    def compose(self) -> Composable:
        return (
            self.init
            >> Loop(until=self.done)(self.dispatch >> self.collect_one >> self.apply)
            >> self.finish
        )

    @tasklet
    async def dispatch(self) -> None:
        if self.round >= self.config.job.rounds:
            self.final = True
        if self.final:
            return
        assert self.selector is not None and self.topology.downstream is not None
        if not self._round_started:
            self._round_started = self.clock()
        alive = [c for c in self.candidates if c not in self.silent]
        if len(self.in_flight) >= len(alive):
            return
        chosen = [c for c in self.selector.select(alive, self.round) if c not in self.in_flight]
        msg = Model(round=self.round, weights=pack(self.global_weights, self.extras)).message()
        chosen = sorted(chosen)
        reached = await self.send_all(self.topology.downstream, chosen, msg)
        self.silent.update(p for p in chosen if p not in reached)
        for peer in reached:
            self.in_flight[peer] = self.round

    async def _check_quorum(self) -> None:
        alive = self.alive_trainers()
        if alive >= self.config.job.min_trainers:
            self.quorum_regained(alive)
            return
        self.below_quorum(alive)  # raises once quorum_grace is over
        await self.await_quorum()

    @tasklet
    async def collect_one(self) -> None:
        self._flushed = False
        if self.final:
            return
        await self._check_quorum()
        if not self.in_flight:
            raise FlameError("no trainer could be started (the selector chose nobody)")
        assert self.topology.downstream is not None
        chan = self.channels[self.topology.downstream]
        started = self.clock_can_start(set(self.in_flight))
        timeout = self.config.job.round_timeout if started else self.wait_timeout
        try:
            peer, msg = await chan.recv_any(sorted(self.in_flight), timeout=timeout)
        except PeerTimeout:
            self.log.warning("round.timeout", round=self.round, missing=sorted(self.in_flight))
            self.silent.update(self.in_flight)
            self.in_flight.clear()
            await self._check_quorum()
            return
        self.note_joined(peer, msg)
        if msg.kind == Join.KIND:
            return
        if msg.kind in (Update.KIND, Decline.KIND) and msg.round < self.in_flight[peer]:
            # an answer to a model it had before (it answered a restarted aggregator's resend
            # as well): its answer to the model it trains on now is still to come
            self.log.info("update.stale", sender=peer, round=msg.round, current=self.round)
            return
        base = self.in_flight.pop(peer)
        if msg.kind == Abort.KIND:
            self.log.warning("peer.aborted", peer=peer, reason=Abort.read(msg).reason)
            return
        if msg.kind == Decline.KIND:
            reason = Decline.read(msg).reason
            self.log.info("round.declined", round=self.round, peer=peer, reason=reason)
            self._report_done(peer, None, 0.0)
            return
        self.participants = [peer]
        try:
            received = self.validate(peer, msg, expected_round=base)
            contribution = received.contribution(base_round=base)
            ready = self.buffer.add(contribution, self.global_weights, self.round)
        except RejectedUpdate as exc:
            self.log.warning("update.rejected", sender=peer, reason=exc.reason, round=self.round)
            self._report_done(peer, None, 0.0)
            return
        self.buffered.append(received)
        loss = received.metrics.get("loss")
        self._report_done(peer, loss, received.duration, received.num_samples)
        if ready:
            self.prev_weights = self.global_weights
            self.global_weights = self.buffer.flush(self.global_weights, self.round)
            self._flushed = True

    def _report_done(
        self, peer: str, loss: float | None, duration: float, samples: float = 1.0
    ) -> None:
        assert self.selector is not None
        utility = None if loss is None else loss * math.sqrt(max(samples, 1.0))
        self.selector.report(peer, utility=utility, duration=duration)

    @tasklet
    async def apply(self) -> None:
        if self.final:
            await self._final_round()
            return
        if not self._flushed:
            return
        self.round += 1
        self.round_metrics = weighted_metrics([(r.metrics, r.eval_samples) for r in self.buffered])
        self.round_metrics["trainers"] = float(len(self.buffered))
        self.buffered = []
        step = self.round - 1
        metrics = dict(self.round_metrics)
        metrics["round_time"] = self.clock() - self._round_started
        self._round_started = self.clock()
        self.history.append({"round": step, **metrics})
        self.tracker.log_round(step, metrics)
        if self.best.offer(step, self.prev_weights, metrics) and self.best.weights is not None:
            # the tracker keeps its best by the same rule: it only needs the improvements
            self.tracker.offer_model(step, self.best.weights, metrics)
        self.log.info("round.finished", round=self.round, metrics=metrics)
        self.save()
        if self.round >= self.config.job.rounds:
            self.final = True

    async def _final_round(self) -> None:
        # Trainers still busy will first send their (now useless) update: drain it.
        assert self.topology.downstream is not None
        chan = self.channels[self.topology.downstream]
        deadline = self.clock() + self.config.job.round_timeout
        while self.in_flight:
            try:
                peer, msg = await chan.recv_any(
                    sorted(self.in_flight), timeout=max(deadline - self.clock(), 0.0)
                )
            except PeerTimeout:
                break
            self.in_flight.pop(peer, None)
            if msg.kind == Update.KIND:
                self.log.info("update.after_last_round", sender=peer)
        self.round = self.config.job.rounds + 1
        self.participants = list(self.candidates)
        await self.distribute.run()
        await self.collect.run()
        await self.aggregate.run()
        await self._report()
        self.finished = True
