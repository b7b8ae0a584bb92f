"""Aggregators: the top one (applies the job's strategy, tracks, checkpoints) and middle ones
(aggregate their group and forward it up). Both run the same chain:

    init >> Loop(until=done)(fetch >> distribute >> collect >> aggregate >> upload) >> finish

* ``fetch``: top: start round r and pick participants with the selector; middle: read the
  coordinator's assignment (coordinated topology) and the top's model.
* ``distribute``: send the global model (+ the strategy's ``to_trainers()`` extras) to the
  participants, each with its own :class:`~flame.instructions.Instructions` for the round if
  :meth:`Aggregator.instruct` gave it any, or ``done`` with the final model after the last
  round. A participant it cannot reach is silent; but when too few were reached for the
  round to count (below ``min_trainers``), one that has never joined is still starting: it
  stays in the round, and ``collect`` sends it the model when its Join arrives
  (``round.served_late``), waiting for it up to ``quorum_grace``.
* ``collect``: ``recv_any`` until every participant answered or ``round_timeout`` passed; the
  round's clock starts once ``min_trainers`` of its participants (all of them, if fewer) have
  joined (:class:`~flame.protocol.Join`, sent by a trainer when its ``load_data`` is done), so
  slow task start-up is no timeout; without enough joins the round waits up to
  ``max_run_time``. Each
  update is validated (job, round, sender, names/shapes/dtypes, finite values, no more training
  samples claimed than its data owners registered) and a bad one is logged
  (``update.rejected``) and left out. A valid one is folded into the round's running aggregate
  at once, in sender order (:mod:`flame.roles.folding`), when the rule can stream (FedAvg,
  FedProx, the adaptive rules; a middle aggregator's group mean), so the aggregator's memory
  does not grow with the number of trainers; other rules get every update at ``aggregate``.
  A :class:`~flame.protocol.Decline` is counted at once
  (``round.declined``; metric ``declined``); an update that did part of its work (``steps`` of
  ``planned_steps``) counts with that share of its samples (metric ``partial``).
* ``aggregate``: top: the strategy (FedAvg, FedAdam, Krum, ...); a round where fewer than
  ``min_trainers`` trainers answered (updates and declines) keeps the global model
  (``quorum.waiting``) and the next round starts only once enough trainers are back (any
  message from a silent one readmits it; ``quorum.back``); below ``min_trainers`` for longer
  than the job's ``quorum_grace`` -> :class:`QuorumLost` (``quorum_grace`` 0: at once). A
  round with no usable update (all declined, or no work done) keeps the global model
  (``round.no_update``) and the job goes on; middle: sample-weighted mean of its group.
* ``upload``: top: log metrics, offer the model to the tracker, checkpoint, tell the
  coordinator; middle: send the group's model up. With the job's ``evaluation``
  (``{"every": k, "fraction": f}``), every k-th step the top first asks a share f of the
  available trainers to evaluate the model (:class:`~flame.protocol.Evaluate`, no training)
  and logs their sample-weighted metrics as ``eval/<name>`` in the same step (trainers
  directly below the top aggregator only).

A middle aggregator checkpoints the model it got from above (with its instructions, and the
coordinator's assignment) before it hands it down. Restarted, it runs that round again (its
trainers give their kept answers, :mod:`flame.roles.trainer`), skips a model from above for a
round it has already had, and says it is back (:class:`~flame.protocol.Join` with ``resumed``):
the aggregator above, still waiting on it for a later round, sends that round's model again
(the dead attempt may have taken it along). So a SIGKILLed middle aggregator, restarted by the
control plane, ends the job with the undisturbed model.

Asynchronous FedBuff (optimizer ``fedbuff``) uses :class:`AsyncAggregator`'s chain instead,
built from the same pieces.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, fields, replace
from typing import Any, cast

import numpy as np

from flame.aggregation import Strategy, StrategyState, make_strategy
from flame.aggregation import Update as Contribution
from flame.aggregation.streaming import Fold, Streaming
from flame.checkpoint import AggregatorCheckpoint, load_checkpoint, save_checkpoint
from flame.composer import Composable, Loop, tasklet
from flame.errors import (
    AggregationError,
    ConfigError,
    FlameError,
    PeerTimeout,
    QuorumLost,
    RejectedUpdate,
)
from flame.instructions import Instructions
from flame.messages import Message
from flame.protocol import (
    Abort,
    Assign,
    Decline,
    EvalReport,
    Evaluate,
    Final,
    FinalEval,
    Join,
    Model,
    RoundEnd,
    Skip,
    Update,
)
from flame.roles.base import Role, RoleResult, pack, unpack, weighted_metrics
from flame.roles.folding import GroupMean, SenderOrder
from flame.roles.joins import JoinCount
from flame.roles.topology import group_leaders
from flame.selection import Selector, make_selector
from flame.serving.model_card import describe
from flame.tensors import Weights, check_update
from flame.tracking import BestModel, tracking_tags


@dataclass(frozen=True)
class Received:
    """What one participant sent back this round (after validation). Once its tensors are
    folded into the round's aggregate, the aggregator keeps it without them."""

    sender: str
    update: Update  # its metadata (samples, metrics, ...) without tensors; FinalEval at the end
    weights: Weights
    extras: Weights

    @property
    def num_samples(self) -> float:
        return self.update.num_samples

    @property
    def eval_samples(self) -> float:
        return self.update.eval_samples

    @property
    def metrics(self) -> dict[str, float]:
        return self.update.metrics

    @property
    def trainers(self) -> int:
        return self.update.trainers

    @property
    def duration(self) -> float:
        return self.update.duration

    @property
    def base_round(self) -> int:
        return self.update.base_round

    @property
    def work(self) -> float:
        """The share of its planned local work it did (1.0 unless it reported partial work)."""
        return self.update.work

    @property
    def weighted_samples(self) -> int:
        """Its samples weighted by the share of its work it did (what the rule weights by)."""
        return round(self.num_samples * self.work)

    def contribution(self, base_round: int | None = None) -> Contribution:
        """What the aggregation rule gets from this participant: its samples weighted by the
        share of work it did; ``meta`` keeps the raw ``samples`` and the ``steps`` it did."""
        meta: dict[str, float] = {
            **self.metrics,
            "duration": self.duration,
            "samples": self.num_samples,
        }
        if self.update.steps is not None:
            meta["steps"] = self.update.steps
        return Contribution(
            sender=self.sender,
            weights=self.weights,
            num_samples=self.weighted_samples,
            base_round=self.base_round if base_round is None else base_round,
            extras=self.extras,
            meta=meta,
        )


_ANSWERS = (Update.KIND, FinalEval.KIND, Skip.KIND, Decline.KIND, EvalReport.KIND)


def _fields(body: Update) -> dict[str, Any]:
    return {f.name: getattr(body, f.name) for f in fields(body)}


class Aggregator(Role):
    """Subclass it and override ``initialize`` to build the initial global ``self.model`` (top
    aggregator); optionally ``evaluate`` for server-side metrics (logged as ``server/<name>``).
    Whether a task is a top or a middle aggregator follows from its channels."""

    #: Updates that arrive before a participant named earlier has answered wait (to be folded in
    #: sender order) in memory up to this many bytes in all, then on disk in the work dir.
    hold_bytes: int = 64 << 20

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        topo = self.topology
        if topo.downstream is None:
            raise FlameError(f"aggregator {self.config.task_id} has no channel to trainers")
        job = self.config.job
        self.is_top = topo.is_top
        self.strategy: Strategy | None = make_strategy(job.optimizer) if self.is_top else None
        self.selector: Selector | None = (
            make_selector(job.selector, job.seed) if self.is_top else None
        )
        self.best = BestModel(job.tracking.selection_metric, job.tracking.mode)
        self.global_weights: Weights = {}
        self.prev_weights: Weights = {}
        self.extras: Weights = {}
        self.final = False
        self._participants: list[str] = []
        self._selected: frozenset[str] = frozenset()  # the same, for O(1) membership
        self.assigned: list[str] | None = None
        self.received: list[Received] = []
        # this round's running aggregate (streaming rules and middle aggregators), and what
        # feeds it in sender order; None: the strategy aggregates the round's updates at once
        self._fold: Fold | GroupMean | None = None
        self._order: SenderOrder[Received | Contribution] | None = None
        self._streaming: tuple[Strategy | None, bool] | None = None  # see _streams
        self.silent: set[str] = set()
        # participants of this round that distribute could not reach and that have never
        # joined: their tasks are still starting; each gets the model when its Join arrives
        self.unserved: set[str] = set()
        self.quorum_lost_at: float | None = None  # when the job fell below min_trainers
        # peers that have joined (sent Join or any answer) -> how many trainers each stands for
        self.joined: dict[str, int] = {}
        self._announced = False  # middle: told the top aggregator that its group has joined
        # the most samples each sender may claim (what its data owners registered)
        self.sample_limits = self.config.sample_limits(topo.downstream)
        self.aborts: dict[str, str] = {}  # participant -> the reason it gave up with
        self.instructions: dict[str, Instructions] = {}  # this round's, per participant
        self.declined: dict[str, str] = {}  # this round's declines: participant -> reason
        self.round_metrics: dict[str, float] = {}
        self._round_started = 0.0
        self._replay: Message | None = None  # middle: the model to run again after a restart
        down = self.config.peers(topo.downstream)
        if topo.downstream in self.config.channels and self._hybrid_peer_channel():
            leaders = group_leaders(
                self.config, self._hybrid_peer_channel() or "", self._down_role()
            )
            down = [p for p in down if p in leaders] or down
        self.candidates = sorted(down)

    @property
    def participants(self) -> list[str]:
        """This round's participants (assign a new list to change them)."""
        return self._participants

    @participants.setter
    def participants(self, peers: list[str]) -> None:
        self._participants = peers
        self._selected = frozenset(peers)

    def _down_role(self) -> str:
        assert self.topology.downstream is not None
        a, b = self.config.design.channel(self.topology.downstream).pair
        return b if a == self.config.role else a

    def _hybrid_peer_channel(self) -> str | None:
        """The trainers' peer channel, when the trainers below run the hybrid topology."""
        role = self._down_role()
        for chan in self.config.design.channels:
            if chan.pair == (role, role):
                return chan.name
        return None

    def compose(self) -> Composable:
        return (
            self.init
            >> Loop(until=self.done)(
                self.fetch >> self.distribute >> self.collect >> self.aggregate >> self.upload
            )
            >> self.finish
        )

    # -- init / finish --------------------------------------------------------------------------
    @tasklet
    async def init(self) -> None:
        await self.call_user(self.initialize)
        if not self.is_top:
            await self.resume_middle()
            return
        self.global_weights = self.weights
        self.tracker.start(self._params(), tracking_tags(self.config))
        card = describe(self)  # how the registered model will predict
        if card is not None:
            self.tracker.describe_model(card)
        self.resume()

    def _params(self) -> dict[str, Any]:
        job = self.config.job
        return {
            "rounds": job.rounds,
            "optimizer": job.optimizer.name,
            "optimizer_kwargs": job.optimizer.kwargs,
            "selector": job.selector.name,
            "selector_kwargs": job.selector.kwargs,
            "min_trainers": job.min_trainers,
            "round_timeout": job.round_timeout,
            "seed": job.seed,
            "hyperparameters": job.hyperparameters,
            "topology_trainers": len(self.candidates),
        }

    def resume(self) -> None:
        """Continue from the task's checkpoint, if one exists."""
        if not self.config.checkpoint_dir:
            return
        ckpt = load_checkpoint(self.config.checkpoint_dir)
        if ckpt is None:
            return
        assert self.strategy is not None and self.selector is not None
        check_update(ckpt.weights, self.global_weights, "checkpoint")
        self.round = ckpt.round
        self.global_weights = ckpt.weights
        self.strategy.load_state(StrategyState(ckpt.strategy_tensors, ckpt.strategy_data))
        self.selector.load_state(ckpt.selector)
        self.history = list(ckpt.history)
        for entry in self.history:  # metrics an earlier attempt may not have got out: again
            self.tracker.log_round(
                int(entry["round"]), {k: v for k, v in entry.items() if k != "round"}
            )
        # after the final round (its trainers have their final model and are gone): finish
        self.final = self.finished = bool(ckpt.extra.get("finished", False))
        self.silent = set(ckpt.extra.get("silent", []))
        self.joined = {str(p): int(n) for p, n in dict(ckpt.extra.get("joined", {})).items()}
        if ckpt.best_weights is not None:
            self.best.round = ckpt.best_round
            self.best.weights = ckpt.best_weights
            self.best.metrics = dict(ckpt.best_metrics)
            self.tracker.offer_model(ckpt.best_round or 0, ckpt.best_weights, ckpt.best_metrics)
        self.log.info("checkpoint.resumed", round=self.round, path=self.config.checkpoint_dir)

    async def resume_middle(self) -> None:
        """A middle aggregator: run the round of its checkpoint's model again and tell the
        aggregator above that it is back; without a checkpoint, write an empty one (round 0),
        so that an attempt killed before its first model still knows it is a restart."""
        if not self.config.checkpoint_dir:
            return
        ckpt = load_checkpoint(self.config.checkpoint_dir)
        if ckpt is None:
            self._save_middle(None)
            return
        state = dict(ckpt.extra.get("middle", {}))
        self.round = ckpt.round
        self.silent = set(state.get("silent", []))
        self.joined = {str(p): int(n) for p, n in dict(state.get("joined", {})).items()}
        assigned = state.get("assigned")
        self.assigned = None if assigned is None else [str(p) for p in assigned]
        if ckpt.round > 0:
            instructions = state.get("instructions")
            body = (
                Final(round=ckpt.round, weights=ckpt.weights)
                if state.get("final")
                else Model(
                    round=ckpt.round,
                    weights=ckpt.weights,
                    instructions=None
                    if instructions is None
                    else Instructions.from_json(instructions),
                )
            )
            self._replay = body.message()
        topo = self.topology
        assert topo.upstream is not None
        top = self.config.peers(topo.upstream)[0]
        back = Join(round=ckpt.round, trainers=sum(self.joined.values()), resumed=True)
        await self.send_all(topo.upstream, [top], back.message())
        self.log.info("checkpoint.resumed", round=self.round, path=self.config.checkpoint_dir)

    def _save_middle(self, msg: Message | None) -> None:
        """A middle aggregator's checkpoint: the model ``msg`` from above (none: round 0)."""
        if not self.config.checkpoint_dir:
            return
        instructions = None
        if msg is not None and msg.kind == Model.KIND:
            given = Model.expect(msg).instructions
            instructions = None if given is None else given.to_json()
        state = {
            "final": msg is not None and msg.kind == Final.KIND,
            "instructions": instructions,
            "assigned": self.assigned,
            "joined": dict(sorted(self.joined.items())),
            "silent": sorted(self.silent),
        }
        save_checkpoint(
            self.config.checkpoint_dir,
            AggregatorCheckpoint(
                round=0 if msg is None else msg.round,
                weights={} if msg is None else dict(msg.weights or {}),
                extra={"middle": state},
            ),
        )

    def save(self) -> None:
        if not self.config.checkpoint_dir or self.strategy is None or self.selector is None:
            return
        st = self.strategy.state()
        save_checkpoint(
            self.config.checkpoint_dir,
            AggregatorCheckpoint(
                round=self.round,
                weights=self.global_weights,
                strategy_tensors=st.tensors,
                strategy_data=st.data,
                selector=self.selector.state(),
                best_round=self.best.round,
                best_weights=self.best.weights,
                best_metrics=self.best.metrics,
                history=self.history,
                extra={
                    "silent": sorted(self.silent),
                    "joined": dict(sorted(self.joined.items())),
                    "finished": self.final,
                },
            ),
        )

    @tasklet
    def finish(self) -> None:
        if self.global_weights and self.model is not None:
            self.load_weights(self.global_weights)
        if self.is_top:
            self.tracking_result = self.tracker.finish("FINISHED")
        self.log.info("aggregator.finished", round=self.round)

    async def on_failure(self, exc: FlameError) -> None:
        await self.notify_abort(self.topology.downstream, exc)
        await self.notify_abort(self.topology.coordinator, exc)
        if self.is_top:
            self.tracker.finish("FAILED")
        else:
            await self.notify_abort(self.topology.upstream, exc)

    def result(self) -> RoleResult:
        return RoleResult(
            task_id=self.config.task_id,
            role=self.config.role,
            is_top=self.is_top,
            weights=dict(self.global_weights),
            history=list(self.history),
            tracking=self.tracking_result,
        )

    # -- round ----------------------------------------------------------------------------------
    @tasklet
    async def fetch(self) -> None:
        self._round_started = self.clock()
        if self.is_top:
            self.round += 1
            self.final = self.round > self.config.job.rounds
            assert self.selector is not None
            await self._readmit()
            if not self.final:
                await self.await_quorum()
            alive = [c for c in self.candidates if c not in self.silent]
            if self.final:
                self.participants = list(self.candidates)
            else:
                self.participants = sorted(self.selector.select(alive, self.round))
            self.extras = self.strategy.to_trainers() if self.strategy is not None else {}
            self.instructions = {} if self.final else self._instructions({})
            return
        msg, self._replay = self._replay, None
        if msg is None:
            msg = await self._next_model()
            self._save_middle(msg)
        self.round = msg.round
        self.final = msg.kind == Final.KIND
        self.global_weights, self.extras = unpack(msg.weights)
        await self._readmit()
        pool = self.assigned if self.assigned is not None else self.candidates
        self.participants = [p for p in pool if self.final or p not in self.silent]
        if self.final:
            self.instructions = {}
            return
        # the top's instructions for this group go to each of its trainers, unless overridden
        group = Model.expect(msg).instructions
        self.instructions = self._instructions(
            {p: group for p in self.participants} if group is not None else {}
        )

    async def _next_model(self) -> Message:
        """A middle aggregator's next model from above (after the coordinator's assignment),
        skipping one for a round it has had already (sent again to a restarted attempt)."""
        topo = self.topology
        if topo.coordinator is not None:
            coord = self.config.peers(topo.coordinator)[0]
            assign = Assign.expect(await self.recv_from(topo.coordinator, coord, "assignment"))
            self.assigned = sorted(assign.trainers or [])
        assert topo.upstream is not None
        top = self.config.peers(topo.upstream)[0]
        while True:
            msg = await self.recv_from(topo.upstream, top, "model")
            if msg.kind not in (Model.KIND, Final.KIND):
                raise FlameError(f"unexpected {msg.kind!r} from {top}")
            if msg.kind == Final.KIND or msg.round > self.round:
                return msg
            self.log.info("model.again", round=msg.round, current=self.round)

    def instruct(self, participants: list[str]) -> dict[str, Instructions]:
        """Per-trainer instructions for this round (override it, or give the selector an
        ``instruct(participants, rnd)`` method): participant -> :class:`Instructions`.
        ``self.round`` is the round; participants left out get none."""
        method = getattr(self.selector, "instruct", None)
        if method is None:
            return {}
        result: dict[str, Instructions] = method(list(participants), self.round)
        return result

    def _instructions(self, inherited: dict[str, Instructions]) -> dict[str, Instructions]:
        given = self.instruct(list(self.participants))
        if not isinstance(given, dict):
            raise ConfigError(f"instruct() returned {type(given).__name__}, not a dict")
        for peer, value in given.items():
            if peer not in self._selected:
                raise ConfigError(
                    f"instruct() names {peer!r}, which is not a participant of round {self.round}"
                )
            if not isinstance(value, Instructions):
                raise ConfigError(
                    f"instruct() gave {peer!r} a {type(value).__name__}, not Instructions"
                )
        return {**inherited, **given}

    async def _readmit(self, wait: float = 0.0) -> None:
        """A silent peer that has sent anything since (a late update) is alive again; waits up
        to ``wait`` seconds for the first one."""
        if not self.silent or self.topology.downstream is None:
            return
        chan = self.channels[self.topology.downstream]
        while self.silent:
            try:
                peer, msg = await chan.recv_any(sorted(self.silent), timeout=wait)
            except PeerTimeout:
                return
            wait = 0.0
            self.silent.discard(peer)
            self.note_joined(peer, msg)
            self.log.info("peer.back", peer=peer, late_kind=msg.kind, late_round=msg.round)

    def alive_trainers(self) -> int:
        """How many trainers the peers below that are not silent stand for."""
        return sum(self.joined.get(p, 1) for p in self.candidates if p not in self.silent)

    def below_quorum(self, trainers: int) -> None:
        """Only ``trainers`` trainers are left: start (or go on) counting the job's
        ``quorum_grace``; :class:`QuorumLost` once it has run out."""
        job = self.config.job
        now = self.clock()
        if self.quorum_lost_at is None:
            self.quorum_lost_at = now
            self.log.warning(
                "quorum.waiting",
                round=self.round,
                trainers=trainers,
                min_trainers=job.min_trainers,
                grace=job.quorum_grace,
            )
        if now - self.quorum_lost_at >= job.quorum_grace:
            raise QuorumLost(
                f"round {self.round}: {trainers} trainer(s) left for "
                f"{now - self.quorum_lost_at:.1f}s (quorum_grace {job.quorum_grace:g}s), "
                f"min_trainers is {job.min_trainers}"
            )

    def quorum_regained(self, trainers: int) -> None:
        if self.quorum_lost_at is not None:
            self.log.info(
                "quorum.back",
                round=self.round,
                trainers=trainers,
                after=round(self.clock() - self.quorum_lost_at, 3),
            )
        self.quorum_lost_at = None

    async def await_quorum(self) -> None:
        """Below ``min_trainers`` since an earlier round: wait for silent trainers to come back
        (any message readmits one) for what is left of ``quorum_grace``. Returns at once when
        no silent peer is left to wait for: the round then shows who is there."""
        need = self.config.job.min_trainers
        while self.quorum_lost_at is not None and self.silent:
            alive = self.alive_trainers()
            if alive >= need:
                self.quorum_regained(alive)
                return
            self.below_quorum(alive)  # raises once the grace is over
            left = self.quorum_lost_at + self.config.job.quorum_grace - self.clock()
            await self._readmit(wait=max(left, 0.0))

    def note_joined(self, peer: str, msg: Message) -> Join | None:
        """``peer`` has joined: it sent :class:`Join` (returned, once read), or any answer."""
        if msg.kind == Join.KIND:
            try:
                join = Join.read(msg)
            except RejectedUpdate as exc:
                self.log.warning("join.rejected", sender=peer, reason=exc.reason)
                return None
            if not join.resumed:
                self.joined[peer] = join.trainers
                return join
        else:
            join = None
        self.joined.setdefault(peer, 1)
        return join

    def clock_can_start(self, peers: list[str] | set[str]) -> bool:
        """May a round over ``peers`` start its clock: have ``min_trainers`` of them (all of
        them, if fewer) joined?"""
        need = min(self.config.job.min_trainers, len(peers))
        return sum(1 for p in peers if p in self.joined) >= need

    async def start_clock(self, waited: float) -> float:
        """The round's deadline, from now; a middle aggregator tells the top the first time
        (so the top's clock waits for a group that is still starting)."""
        if waited > 0:
            self.log.info("round.clock_started", round=self.round, waited=round(waited, 3))
        if not self.is_top and not self._announced and self.topology.upstream is not None:
            top = self.config.peers(self.topology.upstream)[0]
            group = sum(self.joined.values())
            await self.channels[self.topology.upstream].send(
                top, Join(round=self.round, trainers=group).message()
            )
            self._announced = True
        return self.clock() + self.config.job.round_timeout

    def model_for(self, peer: str, payload: Weights | None = None) -> Message:
        """This round's model as ``peer`` gets it (with its own instructions, if any)."""
        payload = pack(self.global_weights, self.extras) if payload is None else payload
        if self.final:
            return Final(round=self.round, weights=payload).message()
        return Model(self.round, payload, instructions=self.instructions.get(peer)).message()

    @tasklet
    async def distribute(self) -> None:
        assert self.topology.downstream is not None
        payload = pack(self.global_weights, self.extras)
        chan = self.topology.downstream
        if self.final or not self.instructions:
            kind = Final if self.final else Model
            msg = kind(round=self.round, weights=payload).message()
            reached = await self.send_all(chan, self.participants, msg)
        else:  # each participant gets its own instructions, nobody else's

            async def one(peer: str) -> list[str]:
                return await self.send_all(chan, [peer], self.model_for(peer, payload))

            sent = await asyncio.gather(*(one(p) for p in self.participants))
            reached = [p for ps in sent for p in ps]
        got = set(reached)
        missed = [p for p in self.participants if p not in got]
        # Too few reached for the round to count, and some have never joined: those are not
        # down but not up yet (a task start slower than the send timeout). They stay in the
        # round, and collect sends each the model on its Join (for up to quorum_grace).
        short = len(got) < self.config.job.min_trainers and not self.final
        self.unserved = {p for p in missed if p not in self.joined} if short else set()
        self.silent.update(p for p in missed if p not in self.unserved)
        self.participants = [p for p in self.participants if p in got or p in self.unserved]

    @tasklet
    async def collect(self) -> None:
        assert self.topology.downstream is not None
        chan = self.channels[self.topology.downstream]
        pending = set(self.participants)  # each message costs O(1) here (issue 21: linear)
        joins = JoinCount(self.participants, self.joined, self.config.job.min_trainers)
        self.received = []
        self.declined = {}
        self._begin_fold()
        began = self.clock()
        give_up = began + self.wait_timeout
        if self.unserved:  # tasks still starting: waited for as long as a lost quorum would be
            give_up = min(give_up, began + self.config.job.quorum_grace)
        deadline: float | None = None
        waited = False  # for joins: the clock did not start with the round
        try:
            while pending:
                if deadline is None and joins.enough:
                    deadline = await self.start_clock(self.clock() - began if waited else 0.0)
                waited = deadline is None
                remaining = (give_up if deadline is None else deadline) - self.clock()
                if remaining <= 0:
                    break
                try:  # distribute reached every participant: they are peers of the channel
                    peer, msg = await chan.recv_any(pending, timeout=remaining, checked=True)
                except PeerTimeout:
                    break
                await self._take(peer, msg, pending, joins)
                del msg  # folded or held: waiting for the next one must not keep its tensors
        finally:
            if self._order is not None:
                self._order.close()  # fold what waited on a participant that never answered
        if pending:
            self.log.warning("round.timeout", round=self.round, missing=sorted(pending))
            if not self.final:
                self.silent.update(pending)
        self.silent.difference_update(r.sender for r in self.received)
        self.silent.difference_update(self.declined)

    def _begin_fold(self) -> None:
        """Start this round's running aggregate, if the round's rule can stream."""
        self._fold = self._order = None
        if self.final:
            return
        if not self.is_top:
            self._fold = GroupMean(self.global_weights, self.extras)
        elif self._streams(self.strategy):
            self._fold = cast(Streaming, self.strategy).begin(self.global_weights, self.round)
        else:
            return
        self._order = SenderOrder(
            self._add_to_fold,
            self.participants,
            hold_bytes=self.hold_bytes,
            spill_dir=self.config.workdir,
        )

    def _streams(self, strategy: Strategy | None) -> bool:
        """Can ``strategy`` fold updates as they arrive? (A protocol check walks the class's
        attributes: it is made once per strategy, not once per round.)"""
        known = self._streaming
        if known is None or known[0] is not strategy:
            known = self._streaming = (strategy, isinstance(strategy, Streaming))
        return known[1]

    def _add_to_fold(self, answer: Received | Contribution) -> None:
        if isinstance(self._fold, GroupMean):
            assert isinstance(answer, Received)
            self._fold.add(answer)
        elif self._fold is not None:
            assert isinstance(answer, Contribution)
            self._fold.add(answer)

    async def _take(self, peer: str, msg: Message, pending: set[str], joins: JoinCount) -> None:
        """One message from a participant during :meth:`collect`."""
        join = self.note_joined(peer, msg)
        joins.note(peer)
        if msg.kind == Join.KIND:
            if peer in self.unserved:
                await self._serve_late(peer, pending)
            elif join is not None:
                await self._resend_if_resumed(peer, join, msg.round)
            return
        if msg.round < self.round and msg.kind in _ANSWERS:
            self.log.info("update.stale", sender=peer, round=msg.round, current=self.round)
            return
        pending.discard(peer)
        if msg.kind == Abort.KIND:
            self.aborts[peer] = Abort.read(msg).reason
            self.log.warning("peer.aborted", peer=peer, reason=self.aborts[peer])
        elif msg.kind == Decline.KIND:
            try:
                self.declined[peer] = Decline.read(msg).reason
            except RejectedUpdate as exc:
                self.declined[peer] = f"(unreadable: {exc.reason})"
            self.log.info("round.declined", round=self.round, peer=peer, reason=self.declined[peer])
        elif msg.kind != Skip.KIND:
            try:
                self.received.append(self._accept(self.validate(peer, msg)))
                return
            except RejectedUpdate as exc:
                self.log.warning(
                    "update.rejected", sender=peer, reason=exc.reason, round=self.round
                )
        if self._order is not None:
            self._order.skip(peer)  # it adds nothing to this round's aggregate

    def _accept(self, received: Received) -> Received:
        """Hand a valid update to the round's fold (to be added in sender order) and keep only
        its metadata; without a fold (a rule that needs every update at once) keep it whole."""
        if self._order is None or self._fold is None:
            return received
        answer: Received | Contribution = received  # what the fold adds
        try:  # a rule's own refusal (e.g. a sender twice) before the update is held or added
            if isinstance(self._fold, GroupMean):
                self._fold.check(received)
            else:
                answer = received.contribution()
                self._fold.check(answer)
        except AggregationError as exc:
            raise RejectedUpdate(str(exc), received.sender) from exc
        self._order.offer(answer)
        return Received(received.sender, received.update, {}, {})

    async def _serve_late(self, peer: str, pending: set[str]) -> None:
        """A participant whose task was still starting when the round's models went out has
        joined: send it this round's model (``round.served_late``)."""
        assert self.topology.downstream is not None
        self.unserved.discard(peer)
        self.log.info("round.served_late", round=self.round, peer=peer)
        if not await self.send_all(self.topology.downstream, [peer], self.model_for(peer)):
            pending.discard(peer)
            self.silent.add(peer)
            if self._order is not None:
                self._order.skip(peer)

    async def _resend_if_resumed(self, peer: str, join: Join, had: int) -> None:
        """A restarted middle aggregator is back with an earlier round's model (``had``) than
        the one it is waited on for: send it this round's model again (``round.resent``)."""
        if not join.resumed or had >= self.round:
            return
        assert self.topology.downstream is not None
        self.log.info("round.resent", round=self.round, peer=peer, had=had)
        await self.send_all(self.topology.downstream, [peer], self.model_for(peer))

    def validate(self, peer: str, msg: Message, expected_round: int | None = None) -> Received:
        """Check one message against this job, round and the global model."""
        expected_round = self.round if expected_round is None else expected_round
        if msg.job_id and msg.job_id != self.config.job_id:
            raise RejectedUpdate(f"job {msg.job_id!r} is not this job", peer)
        if msg.sender and msg.sender != peer:
            raise RejectedUpdate(f"claims to be {msg.sender!r}", peer)
        if msg.round != expected_round:
            raise RejectedUpdate(
                f"round {msg.round} is not the expected round {expected_round}", peer
            )
        if peer not in self._selected:
            raise RejectedUpdate("not selected for this round", peer)
        # the tensors are taken from the message: the update keeps none (one reference only)
        update = (FinalEval if self.final else Update).read(msg, tensors=False)
        if self.final:
            return Received(peer, update, {}, {})
        payload = msg.weights
        limit = self.sample_limits.get(peer)
        if limit is not None and update.num_samples > limit:
            raise RejectedUpdate(
                f"claims {update.num_samples:g} training samples; its data owners registered "
                f"{limit}",
                peer,
            )
        if payload is None:
            raise RejectedUpdate("update carries no weights", peer)
        weights, extras = unpack(payload)
        del payload
        check_update(weights, self.global_weights, peer)
        if self.extras:
            check_update(extras, self.extras, peer)
        return Received(peer, update, weights, extras)

    @tasklet
    def aggregate(self) -> None:
        fold, self._fold, self._order = self._fold, None, None  # this round's, used up here
        # in sender order, as the fold: the same figures to the last bit however they arrived
        ordered = sorted(self.received, key=lambda r: r.sender)
        self.round_metrics = weighted_metrics([(r.metrics, r.eval_samples) for r in ordered])
        contributors = sum(r.trainers for r in self.received)
        self.round_metrics["trainers"] = float(contributors)
        self.prev_weights = self.global_weights
        if self.final:
            return
        self.round_metrics["declined"] = float(len(self.declined))
        self.round_metrics["partial"] = float(sum(r.work < 1.0 for r in self.received))
        if self.is_top:
            answered = contributors + len(self.declined)
            if answered < self.config.job.min_trainers:
                self.below_quorum(answered)  # raises once quorum_grace is over
                self.log.warning(
                    "round.no_update",
                    round=self.round,
                    reason=(
                        f"{answered} trainer(s) answered, min_trainers is "
                        f"{self.config.job.min_trainers}: the global model is kept"
                    ),
                )
                return
            self.quorum_regained(answered)
            assert self.strategy is not None and self.selector is not None
            # a fold has had the contributions already; the rule gets them all at once
            updates = [r.contribution() for r in self.received] if fold is None else []
            if not any(r.weighted_samples > 0 for r in self.received):
                self.log.warning(
                    "round.no_update",
                    round=self.round,
                    reason=(
                        f"{len(self.declined)} declined, {len(self.received)} update(s) with "
                        "no work done: the global model is kept"
                    ),
                    declined=self.declined,
                )
                return
            assert not isinstance(fold, GroupMean)  # a middle aggregator's
            self.global_weights = (
                self.strategy.aggregate(self.global_weights, updates, self.round)
                if fold is None
                else fold.result()
            )
            for r in self.received:
                loss = r.metrics.get("loss")
                self.selector.report(
                    r.sender,
                    utility=None if loss is None else loss * math.sqrt(max(r.num_samples, 1.0)),
                    duration=r.duration,
                )
        elif self.received:
            assert isinstance(fold, GroupMean)
            self.global_weights, extras = fold.result()
            if extras is not None:
                self.extras = extras

    @tasklet
    async def upload(self) -> None:
        if self.is_top:
            await self._report()
        else:
            await self._forward()
        if self.final:
            self.finished = True

    async def _forward(self) -> None:
        topo = self.topology
        assert topo.upstream is not None
        top = self.config.peers(topo.upstream)[0]
        group = Update(
            round=self.round,
            num_samples=sum(r.num_samples * r.work for r in self.received),
            eval_samples=sum(r.eval_samples for r in self.received),
            metrics={k: v for k, v in self.round_metrics.items() if k != "trainers"},
            trainers=sum(r.trainers for r in self.received),
            base_round=self.round,
            duration=self.clock() - self._round_started,
        )
        msg: Message
        if self.final:
            msg = FinalEval(**_fields(group)).message()
        elif not self.received and self.declined:
            reasons = "; ".join(f"{p}: {r}" for p, r in sorted(self.declined.items()))
            msg = Decline(round=self.round, reason=f"the group declined ({reasons})").message()
        elif not self.received:
            msg = Skip(round=self.round).message()
        else:
            weights = pack(self.global_weights, self.extras)
            msg = replace(group, weights=weights).message()
        await self.channels[topo.upstream].send(top, msg)

    async def _report(self) -> None:
        step = self.round - 1  # metrics describe the model after round - 1 aggregations
        metrics = dict(self.round_metrics)
        server = self._server_metrics(self.prev_weights)
        metrics.update({f"server/{k}": v for k, v in server.items()})
        metrics["round_time"] = self.clock() - self._round_started
        metrics.update(await self._federated_evaluation(step))
        self.history.append({"round": step, **metrics})
        self.tracker.log_round(step, metrics)
        if self.best.offer(step, self.prev_weights, metrics) and self.best.weights is not None:
            # the tracker keeps its best by the same rule: it only needs the improvements
            self.tracker.offer_model(step, self.best.weights, metrics)
        self.log.info("round.finished", round=self.round, step=step, metrics=metrics)
        self.save()  # the final round too: a restart after it re-reports, it does not redo it
        topo = self.topology
        if topo.coordinator is not None:
            coord = self.config.peers(topo.coordinator)[0]
            await self.channels[topo.coordinator].send(
                coord, RoundEnd(round=self.round, final=self.final).message()
            )

    async def _federated_evaluation(self, step: int) -> dict[str, float]:
        """``eval/<name>``: the scheduled evaluation of the model after ``step`` rounds."""
        spec = self.config.job.evaluation
        if spec is None or self.final or step == 0 or step % spec.every:
            return {}
        role = self.config.design.role(self._down_role())
        if not role.is_data_consumer or self.selector is None:
            self.log.warning("evaluation.skipped", reason="needs trainers directly below")
            return {}
        assert self.topology.downstream is not None
        alive = [c for c in self.candidates if c not in self.silent]
        count = max(1, math.floor(spec.fraction * len(alive))) if alive else 0
        rng = np.random.default_rng([self.config.job.seed, step])
        asked = sorted(rng.choice(alive, size=count, replace=False).tolist()) if count else []
        msg = Evaluate(round=self.round, weights=pack(self.prev_weights)).message()
        pending = set(await self.send_all(self.topology.downstream, asked, msg))
        chan = self.channels[self.topology.downstream]
        items: list[tuple[dict[str, float], float]] = []
        deadline = self.clock() + self.config.job.round_timeout
        while pending and (remaining := deadline - self.clock()) > 0:
            try:
                peer, answer = await chan.recv_any(pending, timeout=remaining, checked=True)
            except PeerTimeout:
                break
            if answer.kind != EvalReport.KIND or answer.round != self.round:
                continue  # a late answer of an earlier round
            pending.discard(peer)
            try:
                report = EvalReport.read(answer)
            except RejectedUpdate as exc:
                self.log.warning("evaluation.rejected", sender=peer, reason=exc.reason)
                continue
            items.append((report.metrics, report.eval_samples))
        if pending:
            self.log.warning("evaluation.timeout", step=step, missing=sorted(pending))
        result = {f"eval/{k}": v for k, v in weighted_metrics(items).items()}
        result["eval/sites"] = float(len(items))
        return result

    def _server_metrics(self, weights: Weights) -> dict[str, float]:
        if type(self).evaluate is Aggregator.evaluate or self.model is None or not weights:
            return {}
        self.load_weights(weights)
        return {k: float(v) for k, v in self.evaluate().items()}
