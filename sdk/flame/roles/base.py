"""What every role shares: config, channels, tracker, clock, logging, the model, the run loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from flame.aggregation.base import pack_extras, split_extras
from flame.channels.factory import ChannelSet, backend_of
from flame.composer import Composable
from flame.config import TaskConfig
from flame.errors import FlameError, PeerTimeout, QuorumLost
from flame.frameworks import get_weights, set_weights
from flame.frameworks import input_example as default_input_example
from flame.frameworks import predict as default_predict
from flame.messages import Message
from flame.protocol import Abort
from flame.roles.topology import Topology, topology_of
from flame.tensors import Weights
from flame.tracking import NullTracker, Tracker, TrackingResult

Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True)
class PredictionJob:
    hyperparameters: dict[str, Any]
    seed: int = 0


@dataclass(frozen=True)
class PredictionConfig:
    """What a role made by :meth:`Role.for_prediction` sees of its job."""

    job: PredictionJob
    role: str = "predictor"
    task_id: str = "predict"


@dataclass(frozen=True)
class RoleResult:
    """What a finished task hands back (``flame.simulate`` collects these)."""

    task_id: str
    role: str
    is_top: bool
    weights: Weights
    history: list[dict[str, Any]] = field(default_factory=list)
    tracking: TrackingResult | None = None
    # a job kind's result beyond a model and per-round metrics (JSON-safe), e.g. the
    # statistics of a statistics job or the matrix of a cross-site evaluation
    report: dict[str, Any] = field(default_factory=dict)


def pack(weights: Weights, extras: Weights | None = None) -> Weights:
    return pack_extras(weights, extras or {})


def unpack(payload: Weights | None) -> tuple[Weights, Weights]:
    return split_extras(payload or {})


def raise_abort(msg: Message) -> None:
    abort = Abort.read(msg)
    if abort.code == "quorum-lost":
        raise QuorumLost(abort.reason)
    raise FlameError(abort.reason)


def weighted_metrics(items: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Per-metric mean weighted by each source's sample count."""
    sums: dict[str, float] = {}
    totals: dict[str, float] = {}
    for metrics, weight in items:
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + float(value) * weight
            totals[name] = totals.get(name, 0.0) + weight
    return {k: sums[k] / totals[k] for k in sums if totals[k] > 0}


class Role:
    """Base of :class:`Trainer`, :class:`Aggregator` and :class:`Coordinator`.

    User code overrides ``initialize`` (build ``self.model``), ``load_data`` (from
    ``self.config.dataset.uri``), ``train`` and ``evaluate``; ``compose`` wires the tasklets.
    Channels, tracker and clock are handed in, never looked up globally.
    """

    def __init__(
        self,
        config: TaskConfig,
        channels: ChannelSet,
        *,
        tracker: Tracker | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.config = config
        self.channels = channels
        self.tracker: Tracker = tracker or NullTracker()
        self.clock = clock
        self.topology: Topology = topology_of(config)
        self.log = structlog.get_logger(f"flame.{config.role}").bind(
            job_id=config.job_id, task_id=config.task_id, role=config.role
        )
        self.model: Any = None
        self.round = 0  # the round being worked on (1-based); 0 before the first
        self.finished = False
        self.history: list[dict[str, Any]] = []
        self.tracking_result: TrackingResult | None = None
        # Over a network backend, user code (initialize, load_data, train, evaluate) runs in a
        # worker thread so the transport keeps answering peers meanwhile; in-process it runs
        # inline (nothing else to serve, and no thread hop per call).
        self.offload = any(backend_of(config, name) != "inproc" for name in config.channels)

    # -- user hooks ----------------------------------------------------------------------------
    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.config.job.hyperparameters

    def initialize(self) -> None:
        """Build ``self.model`` (a torch module or a dict of NumPy arrays)."""

    def load_data(self) -> None:
        """Load the local dataset (``self.config.dataset.uri``)."""

    def train(self) -> None:
        """Train ``self.model`` on the local data for one round."""

    def evaluate(self) -> dict[str, float]:
        """Metrics of ``self.model`` on local test data (empty: nothing to report)."""
        return {}

    def predict(self, inputs: Any) -> Any:
        """What the model predicts for a batch ``inputs`` (a NumPy array); this is what the
        registered model's ``predict`` and ``flamectl model serve`` answer. Default: the
        framework's (a torch module's forward pass; ``inputs @ w + b`` for a dict model)."""
        return default_predict(self.model, inputs)

    def input_example(self) -> Any:
        """A small batch ``predict`` accepts, logged with the model (its signature is inferred
        from it). Default: one row of zeros when the model says its input width, else None."""
        return default_input_example(self.model)

    @classmethod
    def for_prediction(cls, hyperparameters: dict[str, Any], seed: int = 0) -> Role:
        """An instance that only predicts (how a registered model is served): ``initialize``
        runs with ``self.hyperparameters`` and ``self.config.job.seed``; no channels, no data."""
        role = cls.__new__(cls)
        role.config = PredictionConfig(job=PredictionJob(dict(hyperparameters), seed))  # type: ignore[assignment]
        role.model = None
        role.round = 0
        role.log = structlog.get_logger(f"flame.predict.{cls.__name__}")
        return role

    async def call_user(self, fn: Callable[[], T]) -> T:
        """Run a (blocking) user hook without stalling the event loop's transports."""
        if self.offload:
            return await asyncio.to_thread(fn)
        return fn()

    # -- model <-> weights ----------------------------------------------------------------------
    @property
    def weights(self) -> Weights:
        if self.model is None:
            raise FlameError(f"{type(self).__name__}.initialize() must set self.model")
        return get_weights(self.model)

    def load_weights(self, weights: Weights) -> None:
        if self.model is None:
            raise FlameError(f"{type(self).__name__}.initialize() must set self.model")
        self.model = set_weights(self.model, weights)

    # -- running --------------------------------------------------------------------------------
    def compose(self) -> Composable:
        raise NotImplementedError

    def done(self) -> bool:
        return self.finished

    @property
    def wait_timeout(self) -> float:
        """How long a task waits for its upstream before it gives up (never forever)."""
        return self.config.job.max_run_time

    def result(self) -> RoleResult:
        weights = self.weights if self.model is not None else {}
        return RoleResult(
            task_id=self.config.task_id,
            role=self.config.role,
            is_top=self.topology.is_top,
            weights=weights,
            history=list(self.history),
            tracking=self.tracking_result,
        )

    async def run(self) -> RoleResult:
        self.log.info("task.started", topology=self.topology)
        try:
            await self.compose().run()
        except Exception as exc:
            self.log.error("task.failed", error=str(exc), kind=type(exc).__name__)
            reason = (
                exc
                if isinstance(exc, FlameError)
                else FlameError(f"{self.config.task_id} failed: {type(exc).__name__}: {exc}")
            )
            await self.on_failure(reason)
            raise
        self.log.info("task.finished", rounds=self.round)
        return self.result()

    async def on_failure(self, exc: FlameError) -> None:
        """Tell the tasks that wait on this one that the job is over (best effort)."""

    async def notify_abort(self, channel: str | None, exc: FlameError) -> None:
        if channel is None:
            return
        code = "quorum-lost" if isinstance(exc, QuorumLost) else "failed"
        msg = Abort(round=self.round, reason=str(exc), code=code).message()
        await self.send_all(channel, self.channels[channel].peers(), msg, quiet=True)

    async def send_all(
        self, channel: str, peers: list[str], msg: Message, *, quiet: bool = False
    ) -> list[str]:
        """Send ``msg`` to every peer concurrently; returns those it reached (the others are
        logged: a dead or unreachable peer costs one send timeout, not one per peer)."""
        chan = self.channels[channel]
        reached: list[str] = []
        for peer, err in zip(peers, await chan.send_each(peers, msg), strict=True):
            if err is None:
                reached.append(peer)
            elif not isinstance(err, FlameError):
                raise err
            elif quiet:
                self.log.debug("send.failed", peer=peer, kind=msg.kind, error=str(err))
            else:
                self.log.warning("peer.unreachable", peer=peer, error=str(err))
        return reached

    async def recv_from(self, channel: str, peer: str, what: str) -> Message:
        """The next message from ``peer``; an ABORT raises, silence past the timeout raises."""
        try:
            msg = await self.channels[channel].recv(peer, timeout=self.wait_timeout)
        except PeerTimeout as exc:
            raise FlameError(
                f"no {what} from {peer} on {channel} within {self.wait_timeout:.0f}s"
            ) from exc
        if msg.kind == Abort.KIND:
            raise_abort(msg)
        return msg
