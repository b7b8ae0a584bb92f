"""Run a whole job on this machine: every task in one event loop (inproc, or grpc / mqtt over
loopback), or every task as its own process (``python -m flame.launch config.json``).

    result = flame.simulate("examples/central", datasets=None, backend="inproc")
    result.weights        # final global model
    result.history        # per-round metrics of the top aggregator (step = rounds aggregated)

The same user code runs unchanged under the control plane.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from flame import aio
from flame.channels.discovery import Discovery, MemoryDiscovery
from flame.channels.factory import ChannelSet, open_channels, settings_for
from flame.channels.inproc import InprocHub
from flame.channels.settings import ChannelSettings
from flame.config import Backend, DesignSchema, DiscoverySettings, JobSpec, TaskConfig
from flame.errors import ConfigError, FlameError
from flame.forkserver import ForkedTask, ForkServer
from flame.heterogeneity import Heterogeneity
from flame.jobdir import JobDir, load_job_dir
from flame.paths import new_run_dir
from flame.plan import expand
from flame.ports import free_ports
from flame.results import read_result, tracker_for
from flame.roles.base import Role, RoleResult
from flame.roles.loader import load_role_class, make_role
from flame.roles.topology import topology_of
from flame.roles.trainer import Trainer
from flame.rounds import OnRound, RoundReader
from flame.tensors import Weights
from flame.tracking import TrackingResult
from flame_spec import SpecError, dump, parse_design, parse_job_spec
from flame_spec.privacy import NO_TELEMETRY

log = structlog.get_logger(__name__)

ROUNDS_FILE = "rounds.jsonl"


@dataclass(frozen=True)
class SimulationResult:
    weights: Weights  # final global model
    history: list[dict[str, Any]]  # per-round metrics (step = aggregations done)
    tracking: TrackingResult | None
    tasks: dict[str, RoleResult] = field(default_factory=dict)
    seconds: float = 0.0
    workdir: str | None = None

    report: dict[str, Any] = field(default_factory=dict)  # the job kind's result, if any

    @property
    def final_metrics(self) -> dict[str, Any]:
        return dict(self.history[-1]) if self.history else {}


#: Where a simulated job's tasks run: one event loop (inproc, or grpc / mqtt over loopback), or
#: the processes of a Ray cluster (:mod:`flame.ray_backend`).
SimBackend = Literal["inproc", "grpc", "mqtt", "ray"]

JobSource = (
    str | Path | JobDir | tuple[DesignSchema | Mapping[str, Any], JobSpec | Mapping[str, Any]]
)


def _job_from(job: JobSource) -> tuple[DesignSchema, JobSpec, str, JobDir | None]:
    if isinstance(job, JobDir):
        return job.design, job.spec, job.name, job
    if isinstance(job, str | Path):
        jd = load_job_dir(job)
        return jd.design, jd.spec, jd.name, jd
    design, spec = job
    try:
        return parse_design(design), parse_job_spec(spec), "simulation", None
    except SpecError as exc:
        raise ConfigError(str(exc)) from None


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "job"


def simulate(
    job: JobSource,
    roles: Mapping[str, type[Role]] | None = None,
    datasets: Mapping[str, str] | None = None,
    *,
    backend: SimBackend = "inproc",
    processes: bool = False,
    workdir: str | Path | None = None,
    track: bool = False,
    checkpoint: bool = False,
    job_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    on_round: OnRound | None = None,
    heterogeneity: Heterogeneity | None = None,
    hosts: int | None = None,
) -> SimulationResult:
    """Run ``job`` (a job dir, or ``(design, spec)``) locally; see the module docstring.

    ``roles`` maps role name -> class (default: each role's ``<job dir>/<role>/main.py``);
    ``datasets`` maps dataset name -> uri (default: the job dir's ``datasets.json``, else the
    name itself); ``track`` logs the top aggregator to MLflow (``<workdir>/mlflow.db`` unless the
    job names a tracking uri); ``checkpoint`` writes/resumes checkpoints under
    ``<workdir>/checkpoints``; ``overrides`` replaces job spec fields (e.g. ``{"rounds": 3}``);
    ``on_round`` is called with each round's metrics (``{"round": n, ...}``, as in ``history``)
    as soon as the round ends; ``heterogeneity`` simulates unavailable and straggling trainers
    (:mod:`flame.heterogeneity`; in one process only). ``backend="ray"`` spreads the tasks
    over ``hosts`` Ray actors (default: one per CPU of the cluster; :mod:`flame.ray_backend`).
    Without ``workdir``, a run that needs a folder (tracking, processes or checkpoints) gets a
    new one under ``$FLAME_HOME/runs`` (:mod:`flame.paths`); one that does not writes no file.
    """
    # flame.aio.run: the end of the run costs nothing that grows with the result (issue 21)
    return aio.run(
        simulate_async(
            job,
            roles,
            datasets,
            backend=backend,
            processes=processes,
            workdir=workdir,
            track=track,
            checkpoint=checkpoint,
            job_id=job_id,
            overrides=overrides,
            on_round=on_round,
            heterogeneity=heterogeneity,
            hosts=hosts,
        )
    )


async def simulate_async(
    job: JobSource,
    roles: Mapping[str, type[Role]] | None = None,
    datasets: Mapping[str, str] | None = None,
    *,
    backend: SimBackend = "inproc",
    processes: bool = False,
    workdir: str | Path | None = None,
    track: bool = False,
    checkpoint: bool = False,
    job_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    on_round: OnRound | None = None,
    heterogeneity: Heterogeneity | None = None,
    hosts: int | None = None,
) -> SimulationResult:
    # A local run writes only under its folder: no MLflow installation id in the user's config.
    os.environ.update(NO_TELEMETRY)
    design, spec, name, jobdir = _job_from(job)
    if overrides:
        try:
            spec = parse_job_spec({**dump(spec), **dict(overrides)})
        except SpecError as exc:
            raise ConfigError(str(exc)) from None
    channels: Backend = "inproc" if backend == "ray" else backend  # inproc inside a Ray host
    spec = spec.model_copy(update={"backend": channels})
    job_name = _slug(name)
    job_id = job_id or f"local-{job_name}"
    ds = dict(jobdir.datasets if jobdir else {})
    ds.update(datasets or {})
    for names in spec.datasets.values():
        for n in names:
            ds.setdefault(n, n)
    if workdir is None and (processes or track or checkpoint):
        workdir = new_run_dir(job_name)
    wd = str(Path(workdir).resolve()) if workdir is not None else "."
    discovery = None
    if processes and backend == "grpc":
        discovery = DiscoverySettings(kind="static", endpoints={})
    configs = expand(
        design,
        spec,
        ds,
        job_id=job_id,
        job_name=job_name,
        design_name=job_name,
        workdir=wd,
        checkpoint_root=f"{wd}/checkpoints" if checkpoint else None,
        discovery=discovery,
    )
    started = time.perf_counter()
    if backend == "ray" and (processes or heterogeneity is not None):
        raise ConfigError("backend='ray' runs tasks in Ray's processes, without heterogeneity")
    if backend == "ray":
        from flame.ray_backend import run_on_ray

        results = await run_on_ray(
            configs,
            _classes(design, roles, jobdir),
            track=track,
            on_round=on_round,
            hosts=hosts,
        )
    elif processes:
        if jobdir is None:
            raise ConfigError("processes=True needs a job directory (code is imported per task)")
        if channels == "inproc":
            raise ConfigError("processes=True needs the grpc or mqtt backend")
        if heterogeneity is not None:
            raise ConfigError("heterogeneity is simulated in one process (processes=False)")
        results = await _run_processes(configs, jobdir, Path(wd), channels, track, on_round)
    else:
        classes = _classes(design, roles, jobdir)
        results = await run_tasks(
            configs,
            classes,
            backend=channels,
            track=track,
            on_round=on_round,
            heterogeneity=heterogeneity,
        )
    seconds = time.perf_counter() - started
    top = _top_result(results)
    return SimulationResult(
        weights=top.weights,
        history=top.history,
        tracking=top.tracking,
        tasks=results,
        seconds=seconds,
        workdir=wd if workdir is not None else None,
        report=top.report,
    )


def _classes(
    design: DesignSchema, roles: Mapping[str, type[Role]] | None, jobdir: JobDir | None
) -> dict[str, type[Role]]:
    classes: dict[str, type[Role]] = {}
    for role in design.roles:
        if roles and role.name in roles:
            classes[role.name] = roles[role.name]
        elif jobdir is not None:
            classes[role.name] = load_role_class(jobdir.role_code(role.name))
        else:
            raise ConfigError(f"no class for role {role.name!r}: pass roles={{...}} or a job dir")
    return classes


def _top_result(results: Mapping[str, RoleResult]) -> RoleResult:
    tops = [r for r in results.values() if r.is_top]
    if tops:
        return tops[0]
    trainers = sorted(r.task_id for r in results.values() if r.history)
    if not trainers:
        raise FlameError("no task reported a result")
    return results[trainers[0]]


async def run_tasks(
    configs: list[TaskConfig],
    classes: Mapping[str, type[Role]],
    *,
    backend: Backend = "inproc",
    track: bool = False,
    hub: InprocHub | None = None,
    discovery: Discovery | None = None,
    on_round: OnRound | None = None,
    heterogeneity: Heterogeneity | None = None,
    wait_all: bool = False,
) -> dict[str, RoleResult]:
    """Run every task of a job in this event loop; returns each finished task's result.

    The job fails (the top aggregator's error is raised) only when the task that holds the
    result fails; a trainer that dies is the aggregator's business (timeouts, quorum).
    ``wait_all``: the tasks are a share of a job whose result is held elsewhere (the Ray
    backend's hosts): every one is waited for, and a failure is logged, not raised.
    """
    if not configs:
        raise ConfigError("the job has no tasks")
    hub = hub or InprocHub(configs[0].job_id)
    if backend == "grpc" and discovery is None:
        discovery = MemoryDiscovery()
    channel_sets: dict[str, ChannelSet] = {}
    base = ChannelSettings()  # the environment, read once for every task (not per task)
    try:
        for cfg in configs:
            channel_sets[cfg.task_id] = await open_channels(
                cfg,
                hub=hub,
                backend=backend,
                discovery=discovery,
                settings=settings_for(cfg, base),
            )
        role_objs = {
            cfg.task_id: make_role(
                classes[cfg.role],
                cfg,
                channel_sets[cfg.task_id],
                tracker=tracker_for(cfg, track, on_round),
            )
            for cfg in configs
        }
        if heterogeneity is not None:
            for role in role_objs.values():
                if isinstance(role, Trainer):
                    role.device = heterogeneity
        key = _key_task(role_objs)
        # The job's set-up (configs, channels, roles: millions of objects at 10,000 trainers)
        # lives until the end: kept out of the garbage collector's full passes, which would
        # otherwise walk all of it again and again during the run (issue 21).
        gc.freeze()

        async def run_one(task_id: str, role: Role) -> RoleResult:
            try:
                return await role.run()
            finally:
                await channel_sets[task_id].close()

        tasks = {
            tid: asyncio.create_task(run_one(tid, r), name=tid) for tid, r in role_objs.items()
        }
        try:
            if wait_all:
                await asyncio.wait(tasks.values())
            else:
                await asyncio.wait([tasks[key]])
            main_error = None if wait_all else tasks[key].exception()
            others = [t for tid, t in tasks.items() if tid != key]
            if others and not wait_all:
                grace = configs[0].job.round_timeout if main_error is None else 1.0
                _, pending = await asyncio.wait(others, timeout=grace)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for t in tasks.values():
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        if main_error is not None:
            raise main_error
        results: dict[str, RoleResult] = {}
        for tid, t in tasks.items():
            if t.cancelled():
                continue
            exc = t.exception()
            if exc is None:
                results[tid] = t.result()
            else:
                log.warning("task.failed", task_id=tid, error=str(exc))
        return results
    finally:
        gc.unfreeze()
        for cs in channel_sets.values():
            await cs.close()


def _key_task(roles: Mapping[str, Role]) -> str:
    """The task whose result is the job's: the top aggregator, else the lowest trainer id."""
    for tid, role in roles.items():
        if role.topology.is_top:
            return tid
    return min(roles)


# -- processes ------------------------------------------------------------------------------------
async def _run_processes(
    configs: list[TaskConfig],
    jobdir: JobDir,
    root: Path,
    backend: Backend,
    track: bool,
    on_round: OnRound | None = None,
) -> dict[str, RoleResult]:
    if backend == "grpc":
        ports = free_ports(len(configs))
        endpoints = {c.task_id: f"127.0.0.1:{p}" for c, p in zip(configs, ports, strict=True)}
        configs = [
            c.model_copy(
                update={"discovery": DiscoverySettings(kind="static", endpoints=endpoints)}
            )
            for c in configs
        ]
    procs: dict[str, ForkedTask] = {}
    logs: dict[str, Path] = {}
    key = min(c.task_id for c in configs)
    rounds: RoundReader | None = None
    follower: asyncio.Task[None] | None = None
    # each task a process of its own, forked with the SDK imported and generated data made
    forks = ForkServer([c.dataset.uri for c in configs if c.dataset is not None])
    await forks.start()
    try:
        for cfg in configs:
            task_dir = root / "tasks" / cfg.task_id
            code_dir = task_dir / "code" / cfg.role
            code_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(jobdir.role_code(cfg.role), code_dir / "main.py")
            cfg = cfg.model_copy(update={"workdir": str(task_dir)})
            (task_dir / "config.json").write_text(cfg.model_dump_json(by_alias=True, indent=1))
            logs[cfg.task_id] = task_dir / "task.log"
            args = ["-m", "flame.launch", str(task_dir / "config.json")]
            if not track:
                args.append("--no-track")
            if topology_of(cfg).is_top:
                key = cfg.task_id
                if on_round is not None:  # the task streams its rounds through a file
                    rounds = RoundReader(task_dir / ROUNDS_FILE)
                    args += ["--rounds-file", str(task_dir / ROUNDS_FILE)]
            procs[cfg.task_id] = await forks.fork(cfg.task_id, args, task_dir, logs[cfg.task_id])
        if rounds is not None and on_round is not None:
            follower = asyncio.create_task(_follow(rounds, on_round))
        await asyncio.wait_for(procs[key].wait(), timeout=configs[0].job.max_run_time)
        others = [p.wait() for tid, p in procs.items() if tid != key]
        await asyncio.wait_for(asyncio.gather(*others), timeout=configs[0].job.round_timeout + 10)
    except TimeoutError:
        pass
    finally:
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            _deliver(rounds, on_round)  # what was written after the last poll
        await forks.close()  # kills what is still running
    if procs[key].returncode != 0:
        tail = logs[key].read_text(errors="replace")[-3000:]
        raise FlameError(f"task {key} exited with {procs[key].returncode}:\n{tail}")
    results: dict[str, RoleResult] = {}
    for cfg in configs:
        res = read_result(root / "tasks" / cfg.task_id)
        if res is not None:
            results[cfg.task_id] = res
    return results


async def _follow(rounds: RoundReader, on_round: OnRound, period: float = 0.1) -> None:
    while True:
        _deliver(rounds, on_round)
        await asyncio.sleep(period)


def _deliver(rounds: RoundReader | None, on_round: OnRound | None) -> None:
    if rounds is None or on_round is None:
        return
    for entry in rounds.read():
        try:
            on_round(entry)
        except Exception as exc:
            log.warning("rounds.callback_failed", error=repr(exc))
