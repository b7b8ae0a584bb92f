"""`make demo KEEP=1`: the demo keeps the stack and the MLflow UI up after its job, shows only
addresses that answer, and stops everything at Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from flame.cli.demo import live_addresses
from flame.cli.stack import Stack, StackState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_no_address_is_shown_for_a_stack_that_does_not_answer() -> None:
    dead = StackState(
        home="/nowhere",
        api_url="http://127.0.0.1:1",
        admin_token="t",
        mlflow_url="http://127.0.0.1:1",
        controller="127.0.0.1:1",
        notifier="127.0.0.1:1",
    )
    assert live_addresses(dead, "http://127.0.0.1:1#/experiments/1/runs/x", "models:/m@best") == []


def test_demo_keep_serves_the_mlflow_ui_until_ctrl_c(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flame.cli.demo", "--keep", "--rounds", "3", "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "press Ctrl-C" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 540  # the test's own timeout is 600 s
        while not ready.wait(0.5):
            assert proc.poll() is None, "\n".join(lines)
            assert time.monotonic() < deadline, "\n".join(lines)
        text = "\n".join(lines)
        assert "job completed" in text, text
        ui = re.search(r"MLflow UI:\s+(http://\S+)", text)
        run = re.search(r"the run:\s+(http://\S+)", text)
        assert ui and run, text
        # what was printed answers while the demo waits
        assert httpx.get(f"{ui.group(1)}/health", timeout=10).status_code == 200
        search = f"{ui.group(1)}/api/2.0/mlflow/runs/search"
        assert httpx.post(search, json={}, timeout=10).status_code == 401  # accounts only
        login = re.search(r"log in as (\S+); the password is in (\S+)", text)
        assert login, text
        auth = (login.group(1), Path(login.group(2)).read_text().strip())
        experiment = run.group(1).split("/experiments/", 1)[1].split("/", 1)[0]
        found = httpx.post(search, json={"experiment_ids": [experiment]}, auth=auth, timeout=30)
        runs = found.json()["runs"]
        assert [r["info"]["run_id"] for r in runs] == [run.group(1).rsplit("/", 1)[1]]
        proc.send_signal(signal.SIGINT)
        # stopping the stack signals every process it started: slow on a loaded machine (a CPU
        # hog beside this suite once took it past 120 s), so wait on it, not on a clock
        try:
            code = proc.wait(timeout=max(60.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError("the demo did not stop after Ctrl-C:\n" + "\n".join(lines))
        assert code == 0, "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        Stack(home).down()  # whatever the demo left, if it failed
    reader.join(10)
    assert "stack stopped" in "\n".join(lines)
    assert not (home / "stack.json").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{ui.group(1)}/health", timeout=5)
