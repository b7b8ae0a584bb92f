"""Environments for task code that needs packages beyond the SDK (a role's
``requirements.txt``, see :mod:`flame_spec.requirements`).

``ensure_env(root, requirements, python)`` returns the interpreter of a virtual environment in
``root/<key>`` that sees everything ``python`` has (the SDK and its dependencies, through a
``.pth`` file) plus the requirements, installed by pip:

- from the node's own configured index only (the requirements carry no options or URLs);
- as wheels only (``--only-binary :all:``): nothing is built, no package's setup code runs;
- with hashes checked when the file has them;
- never replacing a package the base environment has at another version (a constraints file
  pins each one), so training code cannot swap the SDK's own dependencies.

``key`` is a hash of the interpreter and the canonical requirements: every code version with the
same requirements shares one environment, built once (under a file lock, so tasks that start
together wait for one build) and marked complete only when pip succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import structlog

from flame_service.errors import FlameServiceError
from flame_spec.requirements import Requirement, requirements_text

log = structlog.get_logger(__name__)

READY = ".flame-ready"
PIP_TIMEOUT = 900.0
_BASE_INFO = (
    "import json, site, sys, sysconfig\n"
    "from importlib import metadata\n"
    "purelib = sysconfig.get_paths()['purelib']\n"
    "paths = list(dict.fromkeys([*site.getsitepackages(), purelib]))\n"
    "dists = sorted({(d.metadata['Name'], d.version) for d in metadata.distributions()"
    " if d.metadata['Name']})\n"
    "print(json.dumps({'version': sys.version, 'paths': paths + sys.path[1:], 'dists': dists}))\n"
)


class EnvError(FlameServiceError):
    """The requirements could not be installed (pip's own words in the message)."""

    code = "failed_precondition"


def env_key(python: str, requirements: list[Requirement]) -> str:
    text = f"{Path(python).resolve()}\n{requirements_text(requirements)}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


async def ensure_env(root: Path, requirements: list[Requirement], python: str) -> str:
    """The interpreter of the environment for ``requirements`` (built on first use)."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = env_key(python, requirements)
    folder = root / key
    venv_python = folder / "bin" / "python"
    if (folder / READY).exists():
        return str(venv_python)
    lock_path = root / f"{key}.lock"
    with lock_path.open("w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            if not (folder / READY).exists():  # another task may have built it meanwhile
                await _build(folder, requirements, python)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return str(venv_python)


async def _run(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise EnvError(f"{Path(argv[0]).name} took longer than {timeout:g}s") from None
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        tail = " | ".join(line for line in text.strip().splitlines()[-6:] if line.strip())
        raise EnvError(f"installing the role's requirements failed: {tail}"[:2000])
    return text


async def _build(folder: Path, requirements: list[Requirement], python: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)  # a build that did not finish
    started = asyncio.get_running_loop().time()
    base = json.loads(await _run([python, "-c", _BASE_INFO], 60))
    await _run([python, "-m", "venv", "--without-pip", str(folder)], 120)
    venv_python = folder / "bin" / "python"
    site = json.loads(
        await _run(
            [
                str(venv_python),
                "-c",
                "import json, site; print(json.dumps(site.getsitepackages()))",
            ],
            60,
        )
    )[0]
    # the base environment's packages, after the environment's own (requirements come first)
    paths = [p for p in base["paths"] if p and Path(p).is_dir()]
    Path(site, "_flame_base.pth").write_text("".join(f"{p}\n" for p in paths))
    (folder / "requirements.txt").write_text(requirements_text(requirements))
    (folder / "constraints.txt").write_text("".join(f"{n}=={v}\n" for n, v in base["dists"]))
    argv = [python, "-m", "pip", "--python", str(venv_python), "install"]
    argv += ["--only-binary", ":all:", "--no-input", "--disable-pip-version-check"]
    argv += ["--no-warn-script-location", "-c", str(folder / "constraints.txt")]
    argv += ["-r", str(folder / "requirements.txt")]
    if any(r.hashes for r in requirements):
        argv.append("--require-hashes")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    await _run(argv, PIP_TIMEOUT, env)
    (folder / READY).write_text(sys.version)
    log.info(
        "pyenv.built",
        folder=str(folder),
        requirements=[r.name for r in requirements],
        seconds=round(asyncio.get_running_loop().time() - started, 2),
    )
