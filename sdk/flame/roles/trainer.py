"""The data-consumer role: fetch the global model, train locally, send the update back.

One chain serves every topology; each tasklet does nothing where the topology has no use for it:

    init >> Loop(until=done)(fetch >> share >> step >> reduce >> upload)

* central / hierarchical / async: ``fetch`` from the aggregator, ``step`` trains, ``upload``.
* coordinated: ``fetch`` first reads the coordinator's assignment (which aggregator to use).
* hybrid: the group's leader (lowest task id) fetches and ``share``s the model with its group,
  everyone trains, ``reduce`` ring-all-reduces the sample-weighted models inside the group, the
  leader uploads the group's model.
* distributed: no aggregator; ``fetch`` just counts rounds, ``reduce`` averages over all trainers.

A model the trainer has already answered (the same round, the same weights and instructions:
an aggregator restarted from its checkpoint resends the round it had not finished) is answered
with the kept answer instead of training again, so state a trainer carries between rounds (a
SCAFFOLD control variate, a generator) moves once per round, as in an undisturbed run
(``round.answered_again``).

Each round the trainer first evaluates the model it received (its local test split) and sends
those metrics with its update, so the metrics of round r belong to the global model after r - 1
aggregations; a final ``done`` message makes every trainer evaluate the final model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from flame.composer import Composable, Loop, tasklet
from flame.errors import DeclineRound, FlameError
from flame.heterogeneity import Heterogeneity
from flame.instructions import Instructions
from flame.messages import Message
from flame.protocol import (
    Assign,
    Decline,
    EvalReport,
    Evaluate,
    Final,
    FinalEval,
    Join,
    Model,
    Update,
)
from flame.roles.async_aggregator import is_async_job
from flame.roles.base import Role, pack, unpack
from flame.roles.collectives import allreduce_sum
from flame.tensors import Weights


def model_digest(msg: Message) -> str:
    """What identifies a model message: its round, weights (names, dtypes, shapes, bytes) and
    instructions."""
    h = hashlib.sha256(f"{msg.kind}:{msg.round}:".encode())
    h.update(json.dumps(msg.meta, sort_keys=True).encode() if msg.meta else b"{}")
    weights = msg.weights or {}
    for name in sorted(weights):
        array = np.asarray(weights[name])
        h.update(f"|{name}:{array.dtype.str}:{array.shape}|".encode())
        # the array's own memory when it is contiguous (no copy); 0-d arrays included
        h.update((array if array.flags.c_contiguous else np.ascontiguousarray(array)).data)
    return h.hexdigest()


@dataclass(frozen=True)
class KeptAnswer:
    """The answer a trainer gave to one model (:func:`model_digest`)."""

    model: str
    body: Update | Decline


class Trainer(Role):
    """Subclass it: ``initialize`` builds ``self.model``, ``load_data`` sets
    ``self.dataset_size`` (train samples; weights the update) and optionally
    ``self.eval_size`` (test samples; weights the metrics), ``train`` trains ``self.model``,
    ``evaluate`` returns metrics on the local test split.

    During ``train``: ``self.global_weights`` is the model received this round (e.g. for a
    FedProx term), ``self.extras`` what the aggregator's strategy sent along (e.g. SCAFFOLD's
    control variate), ``self.round`` the round; put tensors the strategy expects back (e.g. the
    SCAFFOLD control delta) in ``self.update_extras``.

    Heterogeneous rounds: ``self.instructions`` is what the aggregator asked of this trainer
    for this round (:class:`~flame.instructions.Instructions`: ``local_epochs``, ``local_steps``,
    ``lr``, ``deadline``, ``params``; every field ``None`` when it asked nothing). ``train`` may
    call ``self.decline(reason)`` to sit the round out (the aggregator hears it at once), or
    ``self.report_work(steps, planned)`` after doing only part of its local work (the update is
    then weighted by the work done, and FedNova normalises by ``steps``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dataset_size = 0
        self.eval_size: int | None = None
        self.global_weights: Weights = {}
        self.extras: Weights = {}
        self.update_extras: Weights = {}
        self.instructions = Instructions()
        self.steps_done: float | None = None
        self.steps_planned: float | None = None
        self.declined: str | None = None  # this round's reason, when train() declined it
        # flame.simulate(heterogeneity=...): this trainer's simulated availability and speed
        self.device: Heterogeneity | None = None
        self.final = False
        self.metrics: dict[str, float] = {}
        self.upstream_peer: str | None = None
        self._incoming: Message | None = None
        self._out: Weights = {}
        self._out_samples = 0.0
        self._out_eval = 0.0
        self._out_trainers = 1
        self._started = 0.0
        self._model_digest = ""
        self._kept: KeptAnswer | None = None  # the last round's answer
        self._again: Update | Decline | None = None  # this round's model was answered already
        topo = self.topology
        self.group: list[str] = []
        self.is_leader = True
        if topo.peer is not None:
            self.group = sorted([self.config.task_id, *self.config.peers(topo.peer)])
            self.is_leader = self.config.task_id == self.group[0]
        if topo.upstream is not None:
            ups = self.config.peers(topo.upstream)
            if len(ups) == 1:
                self.upstream_peer = ups[0]
            elif topo.coordinator is None:
                raise FlameError(
                    f"trainer {self.config.task_id} has {len(ups)} aggregators on "
                    f"{topo.upstream!r} and no coordinator to choose one"
                )

    @property
    def syncs_upstream(self) -> bool:
        return self.topology.upstream is not None and self.is_leader

    def compose(self) -> Composable:
        return (
            self.init
            >> Loop(until=self.done)(
                self.fetch >> self.share >> self.step >> self.reduce >> self.upload
            )
            >> self.finish
        )

    # -- tasklets -------------------------------------------------------------------------------
    @tasklet
    async def init(self) -> None:
        await self.call_user(self.initialize)
        await self.call_user(self.load_data)
        if self.dataset_size <= 0:
            self.log.warning("trainer.no_dataset_size", hint="set self.dataset_size in load_data")
        await self.join()

    async def join(self) -> None:
        """Tell the aggregator(s) above that this trainer is ready: round clocks start from
        joins (with a coordinator, every aggregator it may be assigned to)."""
        topo = self.topology
        if topo.upstream is None or not self.syncs_upstream:
            return
        peers = [self.upstream_peer] if self.upstream_peer else self.config.peers(topo.upstream)
        msg = Join(trainers=max(len(self.group), 1)).message()
        await self.send_all(topo.upstream, peers, msg)

    @tasklet
    async def fetch(self) -> None:
        topo = self.topology
        self._incoming = None
        if topo.coordinator is not None and self.syncs_upstream:
            coord = self.config.peers(topo.coordinator)[0]
            assign = Assign.expect(await self.recv_from(topo.coordinator, coord, "assignment"))
            if assign.aggregator is None:
                raise FlameError(f"the assignment from {coord} names no aggregator")
            self.upstream_peer = assign.aggregator
        if self.syncs_upstream:
            assert topo.upstream is not None and self.upstream_peer is not None
            self._incoming = await self.recv_from(topo.upstream, self.upstream_peer, "model")
            while self._incoming.kind == Evaluate.KIND:  # scheduled evaluations come between
                await self._answer_evaluation(topo.upstream, self._incoming)
                self._incoming = await self.recv_from(topo.upstream, self.upstream_peer, "model")
            self._accept(self._incoming)
            self._answer_again(self._incoming)
        elif topo.upstream is None:  # distributed: rounds are counted locally
            self.round += 1
            self.final = self.round > self.config.job.rounds
            self._started = self.clock()
            if self.round == 1 and self.model is not None:
                self.global_weights = self.weights

    def _answer_again(self, msg: Message) -> None:
        """A resend of the model this trainer last answered gets the same answer (synchronous
        rounds only, and not in a hybrid group, whose members train together; FedBuff may hand
        a trainer the same model again on purpose)."""
        self._again = None
        if self.final or self.topology.peer is not None or is_async_job(self.config):
            return
        self._model_digest = model_digest(msg)
        if self._kept is not None and self._kept.model == self._model_digest:
            self._again = self._kept.body
            self.log.info("round.answered_again", round=self.round)

    def _accept(self, msg: Message) -> None:
        if msg.kind not in (Model.KIND, Final.KIND):
            raise FlameError(f"unexpected {msg.kind!r} message from {msg.sender}")
        self._started = self.clock()
        self.round = msg.round
        self.final = msg.kind == Final.KIND
        given = None if self.final else Model.expect(msg).instructions
        self.instructions = given or Instructions()
        self.global_weights, self.extras = unpack(msg.weights)

    async def _answer_evaluation(self, channel: str, msg: Message) -> None:
        """Evaluate the model of an :class:`Evaluate` request on the local test split."""
        weights, _ = unpack(Evaluate.expect(msg).weights)

        def run() -> dict[str, float]:
            if weights:
                self.load_weights(weights)
            return {k: float(v) for k, v in self.evaluate().items()}

        metrics = await self.call_user(run)
        size = float(self.eval_size if self.eval_size is not None else self.dataset_size)
        report = EvalReport(round=msg.round, eval_samples=size, metrics=metrics, trainers=1)
        assert self.upstream_peer is not None
        await self.channels[channel].send(self.upstream_peer, report.message())

    def decline(self, reason: str = "declined") -> None:
        """Sit this round out (call it in ``train``); the aggregator gets ``reason`` at once."""
        raise DeclineRound(reason)

    def report_work(self, steps: float, planned: float | None = None) -> None:
        """Say how many local steps ``train`` did this round (of ``planned``, the whole round's
        work): partial work is weighted by the share done."""
        if steps < 0 or (planned is not None and planned <= 0):
            raise FlameError(f"report_work({steps!r}, {planned!r}): steps >= 0, planned > 0")
        self.steps_done = float(steps)
        self.steps_planned = None if planned is None else float(planned)

    @tasklet
    async def share(self) -> None:
        topo = self.topology
        if topo.peer is None or topo.upstream is None:
            return
        chan = self.channels[topo.peer]
        if self.is_leader:
            assert self._incoming is not None
            body = (
                Final(round=self._incoming.round, weights=self._incoming.weights)
                if self.final
                else Model(
                    round=self._incoming.round,
                    weights=self._incoming.weights,
                    instructions=self.instructions,
                )
            )
            await chan.broadcast(body.message())
        else:
            self._accept(await self.recv_from(topo.peer, self.group[0], "model from the leader"))

    @tasklet
    async def step(self) -> None:
        if self._again is None:
            await self.call_user(self._step)

    def _step(self) -> None:
        if self.global_weights:
            self.load_weights(self.global_weights)
        self.metrics = {k: float(v) for k, v in self.evaluate().items()}
        if self.final:
            return
        self.update_extras = {}
        self.steps_done = self.steps_planned = self.declined = None
        plan = None
        if self.device is not None:
            plan = self.device.plan(self.config.index, self.round, self.hyperparameters)
            if plan.local_epochs is not None:
                self.instructions = replace(self.instructions, local_epochs=plan.local_epochs)
        try:
            if plan is not None and plan.decline is not None:
                self.decline(plan.decline)
            self.train()
            if plan is not None and plan.local_epochs is not None and self.steps_done is None:
                self.report_work(plan.local_epochs, plan.planned_epochs)
        except DeclineRound as exc:
            self.declined = exc.reason
            self.log.info("trainer.declined", round=self.round, reason=exc.reason)
            self._out = pack(self.global_weights or self.weights, {})
            self._out_samples = 0.0
            return
        self._out = pack(self.weights, self.update_extras)
        self._out_samples = float(self.dataset_size)

    @tasklet
    async def reduce(self) -> None:
        eval_size = float(self.eval_size if self.eval_size is not None else self.dataset_size)
        self._out_eval = eval_size
        self._out_trainers = 1
        topo = self.topology
        if topo.peer is None or len(self.group) <= 1:
            return
        names = sorted(self._out) if not self.final else []
        metric_names = sorted(self.metrics)
        parts: list[np.ndarray] = []
        n = self._out_samples
        for name in names:
            parts.append(self._out[name].astype(np.float64).ravel() * n)
        parts.append(np.array([n]))
        parts.append(np.array([self.metrics[m] * eval_size for m in metric_names] + [eval_size]))
        total = await allreduce_sum(
            self.channels[topo.peer],
            self.config.task_id,
            self.group,
            np.concatenate(parts),
            self.round,
            self.config.job.round_timeout,
        )
        offset = 0
        n_total = float(total[sum(p.size for p in parts[:-2])])
        reduced: Weights = {}
        for name in names:
            ref = self._out[name]
            chunk = total[offset : offset + ref.size]
            reduced[name] = (
                (chunk / n_total if n_total > 0 else chunk).reshape(ref.shape).astype(ref.dtype)
            )
            offset += ref.size
        tail = total[-(len(metric_names) + 1) :]
        m_total = float(tail[-1])
        if m_total > 0:
            self.metrics = {m: float(tail[j] / m_total) for j, m in enumerate(metric_names)}
        self._out = reduced
        self._out_samples, self._out_eval, self._out_trainers = n_total, m_total, len(self.group)
        if topo.upstream is None and not self.final:
            self.global_weights, _ = unpack(reduced)  # distributed: next round starts here

    @tasklet
    async def upload(self) -> None:
        topo = self.topology
        if self.syncs_upstream:
            assert topo.upstream is not None and self.upstream_peer is not None
            if self._again is not None:
                await self.channels[topo.upstream].send(self.upstream_peer, self._again.message())
                return
            if self.declined is not None and not self.final and self._out_samples <= 0:
                decline = Decline(round=self.round, reason=self.declined)
                self._keep(decline)
                await self.channels[topo.upstream].send(self.upstream_peer, decline.message())
                return
            kind = FinalEval if self.final else Update
            alone = not self.final and self._out_trainers == 1  # its own work: say how much
            update = kind(
                round=self.round,
                weights=None if self.final else self._out,
                num_samples=self._out_samples,
                eval_samples=self._out_eval,
                metrics=self.metrics,
                trainers=self._out_trainers,
                base_round=self.round,
                duration=self.clock() - self._started,
                steps=self.steps_done if alone else None,
                planned_steps=self.steps_planned if alone else None,
            )
            if isinstance(update, Update) and not self.final:
                self._keep(update)
            await self.channels[topo.upstream].send(self.upstream_peer, update.message())
        elif topo.upstream is None:
            entry: dict[str, Any] = {
                "round": self.round - 1,
                **self.metrics,
                "trainers": float(self._out_trainers),
            }
            self.history.append(entry)
            if self.final and self.global_weights:
                self.load_weights(self.global_weights)
        if self.final:
            self.finished = True

    def _keep(self, body: Update | Decline) -> None:
        if self.topology.peer is None and self._model_digest:
            self._kept = KeptAnswer(self._model_digest, body)

    @tasklet
    def finish(self) -> None:
        self.log.info("trainer.finished", round=self.round, metrics=self.metrics)
