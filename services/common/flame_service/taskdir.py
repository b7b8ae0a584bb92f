"""The one way a task folder is prepared, wherever a task runs (local deployer, flamelet).

Layout of ``<workdir>``::

    code/          the job's code zip, unpacked safely (no path escape, size caps)
    config.json    the task config as it runs here (mode 0600: it holds the task credential)
    checkpoints/   kept across attempts, so a restarted aggregator resumes
    tmp/           the task's TMPDIR
    stdout.log stderr.log exit_code ...   written by whoever runs the process

Preparing again (a new attempt) replaces ``code/``, ``tmp/`` and ``config.json`` and keeps the
rest. The code is unpacked into a staging folder first, so a refused bundle leaves no ``code/``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
from pathlib import Path

from flame_service.archive import DEFAULT_MAX_BYTES, safe_extract
from flame_service.files import write_private
from flame_spec import TaskConfig

CODE = "code"
CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
TMP = "tmp"


def prepare_task_dir(
    workdir: Path,
    code: bytes,
    config: TaskConfig,
    *,
    token: str | None = None,
    dataset_uri: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Path:
    """Unpack ``code`` into ``workdir/code`` and write the task's config, localized to this
    folder (work dir, checkpoint dir, its credential, the node-local dataset path); returns the
    config file's path. Raises the archive's :class:`InvalidArgument` / :class:`TooLarge` for an
    unsafe bundle, leaving no ``code/`` behind."""
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in (CODE, f"{CODE}.new", TMP):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    staging = workdir / f"{CODE}.new"
    try:
        safe_extract(code, staging, max_bytes=max_bytes)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.rename(workdir / CODE)
    (workdir / CHECKPOINTS).mkdir(exist_ok=True)
    (workdir / TMP).mkdir()
    local = config.localized(
        workdir=workdir,
        checkpoint_dir=workdir / CHECKPOINTS,
        token=token,
        dataset_uri=dataset_uri,
    )
    path = workdir / CONFIG
    write_private(path, local.to_json())
    return path


FAILURE_PREFIX = "flame.launch: "  # how the task runner prints why it failed (one line)
MAX_FAILURE_CHARS = 1000


def failure_line(workdir: Path) -> str | None:
    """The one-line reason ``python -m flame.launch`` printed on stderr when it failed (the
    last such line of ``stderr.log``), so a failed task's reason says why, not just its exit
    code. The text is the task's own output: it is cut, never interpreted."""
    path = workdir / "stderr.log"
    try:
        with path.open("rb") as fh:
            fh.seek(max(path.stat().st_size - 16384, 0))
            tail = fh.read()
    except OSError:
        return None
    return failure_in(tail.decode(errors="replace"))


def failure_in(output: str) -> str | None:
    """The last ``flame.launch:`` reason line in a task's output, cut to a sane length."""
    for line in reversed(output.splitlines()):
        if line.startswith(FAILURE_PREFIX):
            return line[len(FAILURE_PREFIX) :][:MAX_FAILURE_CHARS]
    return None


def describe_exit(code: int) -> str:
    """How a task's process ended, in words: ``exit code N`` or ``killed by SIGKILL``. Takes
    the shell's convention (128 + N for death by signal N) and Popen's (-N) alike."""
    if code < 0:
        code = 128 - code
    if code > 128:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(code - 128).name}"
    return f"exit code {code}"
