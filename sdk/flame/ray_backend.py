"""``flame.simulate(..., backend="ray")``: one simulated job spread over the processes of a Ray
cluster, for simulations larger than one process.

The job's tasks are split over ``hosts`` Ray actors (default: one per CPU of the cluster). Every
task without a dataset (aggregators, coordinators) lives on host 0, and the trainers are shared
out evenly. Inside a host the tasks run as under ``backend="inproc"``: one event loop, one hub.
A message for a task on another host is encoded once (the envelope the grpc and mqtt backends
carry), queued for that host, and handed over in batches: one actor call carries everything
queued for a host while the previous call was under way, so a broadcast to 5,000 trainers of
another host is one call, and the model's bytes cross once per host. The receiving host decodes
each envelope once and gives each receiver its own copy of the tensors, as inproc does.

The aggregator folds updates in sender order (:mod:`flame.roles.folding`), so where the trainers
run changes nothing: the final weights are inproc's, bit for bit, for the same job and seed.

Which cluster: the one ``ray.init`` was called for; without that call, a local one is started
(no dashboard, no usage statistics) and lives until the process exits, so later runs reuse it.
Only bytes, JSON text and the role classes (users' own files by value) cross Ray, whose own
protocol is pickle between the processes of one cluster: the cluster must be the user's own
(whoever reaches a Ray cluster runs code on it). Heterogeneity is simulated in one process only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from flame.channels.inbox import Inbox
from flame.channels.inproc import InprocHub
from flame.config import TaskConfig
from flame.errors import ChannelError, ConfigError, FlameError
from flame.messages import Message
from flame.roles.base import Role, RoleResult
from flame.roles.loader import USER_MODULE_PREFIX
from flame.rounds import OnRound
from flame.tensors import to_bytes
from flame_spec.privacy import NO_TELEMETRY

log = structlog.get_logger(__name__)

#: What goes to another host: (channel, receiver task id, encoded envelope), or with None for
#: the envelope: that task's end of the channel has closed.
Parcel = tuple[str, str, bytes | None]

ROUNDS_POLL = 0.2  # seconds between two looks at the top aggregator's new rounds


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "backend='ray' needs Ray: pip install 'flame-sdk[ray]' (or pip install ray)"
        ) from None
    return ray


def place(configs: Sequence[TaskConfig], hosts: int) -> list[list[TaskConfig]]:
    """Tasks without a dataset on host 0, the others shared out in turn (host 0 first)."""
    shares: list[list[TaskConfig]] = [[] for _ in range(hosts)]
    data = [c for c in configs if c.dataset is not None]
    shares[0].extend(c for c in configs if c.dataset is None)
    for i, cfg in enumerate(data):
        shares[i % hosts].append(cfg)
    return [s for s in shares if s]


def ship_user_code(ray: Any) -> None:
    """Have Ray send the classes of users' files by value: a module that
    :func:`~flame.roles.loader.load_role_class` made exists only in this process, so a class of
    it (or one built on it, e.g. in ``__main__`` or a test) could not be found by name in a
    host. An importable class still goes by name."""
    for name, module in list(sys.modules.items()):
        if name.startswith(USER_MODULE_PREFIX):
            ray.cloudpickle.register_pickle_by_value(module)


class RayHub(InprocHub):
    """The inproc hub of one host; a receiver on another host gets the message through Ray.

    When a channel end of this host closes (its task ended), the other hosts are told, so that
    a send to it fails at once there too, as inproc's does (a message already on its way is
    dropped on arrival and logged)."""

    def __init__(self, job_id: str, here: int, where: Mapping[str, int], hosts: Sequence[Any]):
        super().__init__(job_id)
        self._here = here
        self._where = where
        self._hosts = hosts
        self._queues: dict[int, list[Parcel]] = {}
        self._encoded: dict[int, dict[str, bytes]] = {}  # host -> message id -> envelope
        self._gone: set[tuple[str, str]] = set()  # (channel, task) ends closed on other hosts
        self._flushing: set[asyncio.Task[None]] = set()

    def new_inbox(self, channel: str, task_id: str) -> Inbox:
        return Inbox(channel, task_id, on_close=lambda: self._closed_here(channel, task_id))

    def _closed_here(self, channel: str, task_id: str) -> None:
        for host in range(len(self._hosts)):
            if host != self._here:
                self._queue(host, (channel, task_id, None))

    def deliver(self, receiver: str, msg: Message) -> None:
        host = self._where.get(receiver, self._here)
        if host == self._here:
            super().deliver(receiver, msg)
            return
        if (msg.channel, receiver) in self._gone:
            raise ChannelError(
                f"{msg.sender} -> {receiver} on channel {msg.channel}: receiver has closed"
            )
        # encoded now, as the sender's tensors are now (it may train on them in place next)
        encoded = self._encoded.setdefault(host, {})
        data = encoded.get(msg.message_id)
        if data is None:
            data = encoded[msg.message_id] = msg.encode()
        self._queue(host, (msg.channel, receiver, data))

    def _queue(self, host: int, parcel: Parcel) -> None:
        queue = self._queues.get(host)
        if queue is None:  # nothing on its way to that host: start a hand-over
            queue = self._queues[host] = []
            task = asyncio.get_running_loop().create_task(self._hand_over(host))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        queue.append(parcel)

    async def _hand_over(self, host: int) -> None:
        """Send what is queued for ``host``, one call at a time, until nothing is."""
        while self._queues.get(host):
            batch = self._queues[host]
            self._queues[host] = []
            self._encoded.pop(host, None)
            try:
                await self._hosts[host].deliver.remote(batch)
            except Exception as exc:  # the host is gone: its tasks miss these, as on a wire
                log.warning("ray.delivery_failed", host=host, messages=len(batch), error=repr(exc))
        self._queues.pop(host, None)

    def deliver_parcels(self, parcels: Sequence[Parcel]) -> None:
        """What another host sent: messages for tasks of this one, and its closed ends."""
        decoded: dict[int, Message] = {}  # one decode per envelope (a batch shares its bytes)
        for channel, receiver, data in parcels:
            if data is None:
                self._gone.add((channel, receiver))
                continue
            try:
                msg = decoded.get(id(data))
                if msg is None:
                    msg = decoded[id(data)] = Message.decode(data)
                super().deliver(receiver, msg)
            except ChannelError as exc:
                log.warning("ray.message_dropped", receiver=receiver, error=str(exc))


class TaskHost:
    """One Ray actor's share of the job's tasks (made a Ray actor class by :func:`run_on_ray`)."""

    def __init__(self, index: int, job_id: str, log_level: int | None = None) -> None:
        os.environ.update(NO_TELEMETRY)
        if log_level is not None:  # the driver's level (flame.logs), else structlog's default
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(log_level))
        self.index = index
        self.job_id = job_id
        self.hub: RayHub | None = None
        self.rounds: list[dict[str, Any]] = []

    def connect(self, hosts: list[Any], where: dict[str, int]) -> None:
        self.hub = RayHub(self.job_id, self.index, where, hosts)

    async def deliver(self, parcels: list[Parcel]) -> None:
        assert self.hub is not None, "connect first"
        self.hub.deliver_parcels(parcels)

    def rounds_from(self, start: int) -> list[dict[str, Any]]:
        return self.rounds[start:]

    async def run(
        self, configs: list[str], classes: Mapping[str, type[Role]], track: bool, lead: bool
    ) -> list[tuple[dict[str, Any], bytes]]:
        """Run this host's tasks (``configs``: each a TaskConfig's JSON); ``lead``: this host
        holds the job's result, so its end ends the run (else every task is waited for)."""
        from flame.results import result_body
        from flame.simulation import run_tasks

        tasks = [TaskConfig.model_validate_json(c) for c in configs]
        results = await run_tasks(
            tasks,
            classes,
            backend="inproc",
            track=track,
            hub=self.hub,
            on_round=self.rounds.append if lead else None,
            wait_all=not lead,
        )
        return [(result_body(r), to_bytes(r.weights)) for r in results.values()]


async def run_on_ray(
    configs: list[TaskConfig],
    classes: Mapping[str, type[Role]],
    *,
    track: bool = False,
    on_round: OnRound | None = None,
    hosts: int | None = None,
) -> dict[str, RoleResult]:
    """Run the job's tasks over ``hosts`` Ray actors; returns each finished task's result."""
    from flame.results import result_from

    ray = _ray()
    if not ray.is_initialized():
        os.environ.update(NO_TELEMETRY)
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=True)
    if hosts is not None and hosts < 1:
        raise ConfigError(f"hosts must be at least 1, not {hosts}")
    cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1)))
    shares = place(configs, hosts or int(cpus))
    where = {c.task_id: i for i, share in enumerate(shares) for c in share}
    actor = ray.remote(num_cpus=min(1.0, cpus / len(shares)))(TaskHost)
    level = logging.getLogger().getEffectiveLevel() if structlog.is_configured() else None
    handles = [actor.remote(i, configs[0].job_id, level) for i in range(len(shares))]
    ship_user_code(ray)
    job = configs[0].job
    rounds = _Rounds(handles[0], on_round) if on_round is not None else None
    follower = asyncio.create_task(rounds.follow()) if rounds is not None else None
    try:
        await asyncio.gather(*(h.connect.remote(handles, where) for h in handles))
        texts = [[c.model_dump_json(by_alias=True) for c in share] for share in shares]
        runs = [
            asyncio.ensure_future(h.run.remote(text, classes, track, i == 0))
            for i, (h, text) in enumerate(zip(handles, texts, strict=True))
        ]
        try:
            await asyncio.wait_for(runs[0], timeout=job.max_run_time)
        except TimeoutError:
            raise FlameError(
                f"the job did not end within max_run_time ({job.max_run_time} s)"
            ) from None
        except ray.exceptions.RayTaskError as exc:  # the top aggregator's own error, as inproc
            raise exc.cause from exc  # raises it (Ray's, with the host's traceback, as cause)
        if runs[1:]:
            await asyncio.wait(runs[1:], timeout=job.round_timeout)
    finally:
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        if rounds is not None:
            await rounds.pull()  # what the top aggregator logged after the last look
        for h in handles:
            ray.kill(h)
    packed: list[tuple[dict[str, Any], bytes]] = []
    for i, run in enumerate(runs):
        if not run.done():
            log.warning("ray.host_unfinished", host=i)
            continue
        try:
            packed.extend(run.result())
        except ray.exceptions.RayError as exc:  # a host of trainers only: its tasks' business
            log.warning("ray.host_failed", host=i, error=str(exc))
    results = [result_from(body, weights) for body, weights in packed]
    return {r.task_id: r for r in results}


class _Rounds:
    """The top aggregator's rounds, handed to ``on_round`` in this process as they end."""

    def __init__(self, host: Any, on_round: OnRound) -> None:
        self.host = host
        self.on_round = on_round
        self.seen = 0

    async def pull(self) -> None:
        try:
            entries = await self.host.rounds_from.remote(self.seen)
        except Exception as exc:
            log.warning("rounds.unreadable", error=repr(exc))
            return
        for entry in entries:
            self.seen += 1
            try:
                self.on_round(entry)
            except Exception as exc:
                log.warning("rounds.callback_failed", error=repr(exc))

    async def follow(self) -> None:
        while True:
            await self.pull()
            await asyncio.sleep(ROUNDS_POLL)
