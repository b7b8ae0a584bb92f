"""``python -m flame.warm [MODULE ...]``: a task's process, started before its task is known.

A node agent keeps one ready per kind of task it expects (:mod:`flamelet.warm`), started the
way that task's process would be, in the same sandbox, with the same work dir, dataset, limits
and environment. While nothing waits on it, it imports the SDK (``flame.launch``) and the
``MODULE``\\ s named (``torch``, say), the second or so every task otherwise spends before its
first message. Then it reads one line on stdin, its order, as JSON::

    {"argv": ["-m", "flame.launch", "config.json"], "env": {"FLAME_TASK_CONFIG": "..."}}

``argv`` is the task's command after the interpreter: ``-m MODULE ARGS...`` or
``SCRIPT ARGS...``. It is run in this process as ``python`` would run it (``__main__``,
``sys.argv``, ``sys.path[0]``, the exit status), with ``env`` added to the environment. One
process serves one task, like a cold start: nothing of an earlier task is in it.

End of input before an order (the agent stopped, or let it go unused) ends it with
:data:`EXIT_UNUSED` and a ``flame.launch:`` line saying so, so that a task whose order was
lost is reported as failed and why, never as completed.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
import warnings
from pathlib import Path
from typing import Any

from flame_spec.warm import EXIT_UNUSED


def warm_up(modules: list[str]) -> None:
    """Import what the task will need. A module that fails to import is the task's problem
    (its own import will say why, in its log), not this process's."""
    import_without_terminal_extras()
    for name in ["flame.launch", *modules]:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import error: the task will see it too
            print(f"flame.warm: cannot import {name}: {type(exc).__name__}: {exc}", file=sys.stderr)


#: What a task's process has no use for, and which libraries it imports pull in where it is
#: installed: structlog imports rich for its console renderer's tracebacks, httpx imports click,
#: rich and pygments for its command line. With attrs, about 60 ms of the SDK's 0.45 s.
TERMINAL_ONLY = ("rich", "click")


def import_without_terminal_extras(modules: tuple[str, ...] = ("structlog", "httpx")) -> None:
    """Import ``modules`` with :data:`TERMINAL_ONLY` hidden (a task logs JSON lines, and never
    runs httpx's command line), then show those again: the task's own code imports them as
    usual."""
    hidden = [name for name in TERMINAL_ONLY if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # importing it fails meanwhile
    try:
        for module in modules:
            importlib.import_module(module)
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def read_order() -> dict[str, Any] | None:
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return None
    order = json.loads(line)
    argv, env = order.get("argv"), order.get("env", {})
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("the order's argv must be a non-empty list of strings")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise ValueError("the order's env must map names to strings")
    return {"argv": argv, "env": env}


def run(argv: list[str]) -> None:
    """Run ``argv`` (after the interpreter) in this process, as ``python ARGV`` would."""
    if argv[0] == "-m":
        if len(argv) < 2:
            raise ValueError("-m needs a module name")
        sys.argv = [argv[1], *argv[2:]]  # run_module puts the module's path in argv[0]
        # imported ahead on purpose (flame.launch): runpy's warning about it is noise here
        warnings.filterwarnings(
            "ignore",
            message=r".*found in sys\.modules after import of package",
            category=RuntimeWarning,
        )
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return
    sys.argv = list(argv)
    sys.path[0] = str(Path(argv[0]).resolve().parent)  # what `python SCRIPT` puts first
    runpy.run_path(argv[0], run_name="__main__")


def main(modules: list[str]) -> int:
    warm_up(modules)
    try:
        order = read_order()
    except ValueError as exc:  # json's errors are ValueErrors too
        print(f"flame.launch: the node agent's order is unreadable: {exc}", file=sys.stderr)
        return 2
    # the task's stdin is empty, as when it is started cold with nothing on its input
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if order is None:
        print(
            "flame.launch: the node agent went away before it handed this process a task",
            file=sys.stderr,
        )
        return EXIT_UNUSED
    os.environ.update(order["env"])
    run(order["argv"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
