"""``python -m flame.warm``: a process started before its task runs the task it is handed as
``python`` would have run it, and runs nothing when no task comes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, os, sys
import helper  # next to the script: python puts the script's folder first on sys.path
warmed = {name: name in sys.modules for name in ("numpy", "structlog", "rich", "click")}
import click, rich.console  # the task's own code can use them
json.dump({"argv": sys.argv, "name": __name__, "stdin": sys.stdin.read(), "helper": helper.X,
           "env": os.environ.get("FLAME_TASK_CONFIG"), "warmed": warmed},
          open("seen.json", "w"))
sys.exit(3)
"""

MODULE = """
import json, sys
json.dump({"argv": sys.argv[1:], "name": __name__}, open("seen.json", "w"))
"""


def warm(folder: Path, order: bytes | None, *modules: str) -> subprocess.CompletedProcess[bytes]:
    """Start a runner in ``folder``, then hand it ``order`` (``None``: close its input)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flame.warm", *modules],
        cwd=folder,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(order or b"", timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def order(argv: list[str], env: dict[str, str] | None = None) -> bytes:
    return json.dumps({"argv": argv, "env": env or {}}).encode() + b"\n"


def test_a_script_runs_as_python_would_run_it(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text(SCRIPT)
    (code / "helper.py").write_text("X = 7\n")
    done = warm(tmp_path, order(["code/main.py", "a", "b"], {"FLAME_TASK_CONFIG": "c.json"}))
    assert done.returncode == 3, done.stderr.decode()
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen == {
        "argv": ["code/main.py", "a", "b"],
        "name": "__main__",
        "stdin": "",  # the order is not the task's input
        "helper": 7,
        "env": "c.json",
        # imported before the order came (the SDK brings NumPy), but not rich or click: the
        # SDK's libraries pull them in only for a terminal, and a task logs JSON
        "warmed": {"numpy": True, "structlog": True, "rich": False, "click": False},
    }


def test_a_module_runs_as_python_minus_m_would_run_it(tmp_path: Path) -> None:
    (tmp_path / "job_entry.py").write_text(MODULE)
    # imported ahead (as flame.launch is), then run as __main__ without runpy's warning
    done = warm(tmp_path, order(["-m", "job_entry", "config.json"]), "job_entry")
    assert done.returncode == 0, done.stderr.decode()
    assert "RuntimeWarning" not in done.stderr.decode()
    assert json.loads((tmp_path / "seen.json").read_text()) == {
        "argv": ["config.json"],
        "name": "__main__",
    }


def test_no_order_runs_nothing_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "job_entry.py").write_text(MODULE)
    done = warm(tmp_path, None)
    assert done.returncode == 75
    assert "flame.launch: the node agent went away" in done.stderr.decode()
    assert not (tmp_path / "seen.json").exists()


def test_an_unreadable_order_runs_nothing(tmp_path: Path) -> None:
    (tmp_path / "job_entry.py").write_text(MODULE)
    for bad in (b"{not json\n", order([]), b'{"argv": ["-m", "job_entry"], "env": {"A": 1}}\n'):
        done = warm(tmp_path, bad)
        assert done.returncode == 2
        assert "flame.launch: the node agent's order is unreadable" in done.stderr.decode()
    assert not (tmp_path / "seen.json").exists()


def test_a_module_that_cannot_be_imported_is_left_to_the_task(tmp_path: Path) -> None:
    (tmp_path / "job_entry.py").write_text(MODULE)
    done = warm(tmp_path, order(["-m", "job_entry"]), "no_such_module_here")
    assert done.returncode == 0
    assert "flame.warm: cannot import no_such_module_here" in done.stderr.decode()
