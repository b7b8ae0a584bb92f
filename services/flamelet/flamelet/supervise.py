"""``python -m flamelet.supervise``: the first process of a task's session.

Applies the resource limits, runs the task command, and records its exit status in a file, so
a flamelet that restarted while the task ran still learns how it ended. Usage::

    python -m flamelet.supervise EXIT_FILE NOFILE CPU_SECONDS ADDRESS_SPACE -- CMD...

(``0`` for CPU_SECONDS / ADDRESS_SPACE means no limit.)
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path


def _limit(which: int, value: int) -> None:
    if value <= 0:
        return
    _soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, hard if hard == resource.RLIM_INFINITY else value))


def main(argv: list[str]) -> int:
    if len(argv) < 6 or argv[4] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    exit_file = Path(argv[0])
    _limit(resource.RLIMIT_NOFILE, int(argv[1]))
    _limit(resource.RLIMIT_CPU, int(argv[2]))
    _limit(resource.RLIMIT_AS, int(argv[3]))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # set only so that this supervisor finds flamelet
    try:
        code = subprocess.run(argv[5:], check=False, env=env).returncode
    except OSError as exc:
        print(f"flamelet: cannot start {argv[5]!r}: {exc}", file=sys.stderr)
        code = 127
    tmp = exit_file.with_suffix(".tmp")
    tmp.write_text(str(code))
    tmp.replace(exit_file)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
