"""Run one task: ``python -m flame.launch config.json [--no-track]``.

1. Load the :class:`TaskConfig` (the control plane's deployer / flamelet writes it).
2. Import the role code: ``<dir of config.json>/code/<role>/main.py`` (the deployer and flamelet
   unzip the job's code into ``<workdir>/code/`` next to the config); if that does not exist,
   ``<cwd>/<role>/main.py`` (a job directory). The file must define exactly one
   Trainer/Aggregator/Coordinator subclass.
3. Open the task's channels, make the tracker (MLflow for the top aggregator only), run.
   Checkpoints go to ``config.checkpoint_dir``, by default ``<dir of config.json>/checkpoints``
   (kept by the deployers across restarts, so a restarted top aggregator resumes).
4. Exit 0 on success (the final weights and per-round metrics are left in the task's workdir as
   ``result.safetensors`` / ``result.json``); exit 2 on a configuration error, 3 when the job
   lost its quorum, 1 on any other failure, each with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import NoReturn

import structlog

from flame import aio
from flame.channels.factory import open_channels
from flame.config import TaskConfig, load_task_config
from flame.errors import ConfigError, FlameError, QuorumLost
from flame.logs import configure as configure_logging
from flame.results import tracker_for, write_result
from flame.roles.base import Role, RoleResult
from flame.roles.loader import load_role_class, make_role
from flame.rounds import OnRound, RoundWriter

log = structlog.get_logger(__name__)

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_QUORUM = 3


def role_code_path(config_path: Path, role: str, cwd: Path | None = None) -> Path:
    bundled = config_path.resolve().parent / "code" / role / "main.py"
    if bundled.is_file():
        return bundled
    local = (cwd or Path.cwd()) / role / "main.py"
    if local.is_file():
        return local
    raise ConfigError(f"no code for role {role!r}: looked for {bundled} and {local}")


async def run_task(
    config: TaskConfig, cls: type[Role], *, track: bool = True, on_round: OnRound | None = None
) -> RoleResult:
    channels = await open_channels(config)
    try:
        role = make_role(cls, config, channels, tracker=tracker_for(config, track, on_round))
        return await role.run()
    finally:
        await channels.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flame.launch", description=__doc__.split("\n")[0]
    )
    parser.add_argument("config", type=Path, help="task config JSON")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    parser.add_argument(
        "--rounds-file", type=Path, help="append each round's metrics here (JSON lines)"
    )
    args = parser.parse_args(argv)
    # A task's stdout is a file the flamelet or deployer ships: JSON lines, info and above.
    configure_logging(default="info", stream=sys.stdout)
    try:
        config = load_task_config(args.config)
        if config.checkpoint_dir is None:  # the deployers keep <task dir>/checkpoints/
            ckpt = str(args.config.resolve().parent / "checkpoints")
            config = config.model_copy(update={"checkpoint_dir": ckpt})
        structlog.contextvars.bind_contextvars(
            job_id=config.job_id, task_id=config.task_id, role=config.role
        )
        cls = load_role_class(role_code_path(args.config, config.role))
        on_round = RoundWriter(args.rounds_file) if args.rounds_file else None
        result = aio.run(run_task(config, cls, track=not args.no_track, on_round=on_round))
        write_result(config.workdir, result)
    except ConfigError as exc:
        print(f"flame.launch: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except QuorumLost as exc:
        print(f"flame.launch: quorum lost: {exc}", file=sys.stderr)
        return EXIT_QUORUM
    except FlameError as exc:
        print(f"flame.launch: task failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # user code raised: still one clear line, and exit 1
        print(f"flame.launch: task failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("flame.launch: interrupted", file=sys.stderr)
        return 130
    return 0


def leave(code: int) -> NoReturn:
    """End the process with ``code`` as a normal exit would, without the interpreter's teardown:
    freeing every module of a task that imported MLflow takes ~1 s on a loaded machine, on the
    path of every job's end. What a normal exit does first is done here too, in its order:
    the threads the task left running (its user code's) are waited for, exit handlers run, the
    standard streams are flushed."""
    shutdown = getattr(threading, "_shutdown", None)  # joins non-daemon threads, as at exit
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed, or its pipe is gone
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
