"""How SDK processes log: human in a terminal, JSON lines in a file; -v adds detail."""

from __future__ import annotations

import io
import json
import os
import pty

import pytest
import structlog

from flame.logs import configure, level_for, wants_json


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FLAME_LOG_JSON", raising=False)
    monkeypatch.delenv("FLAME_LOG_LEVEL", raising=False)
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")  # configure() must not change ours
    yield
    structlog.reset_defaults()


def test_a_terminal_gets_the_console_renderer_and_a_file_gets_json_lines() -> None:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as tty:
            assert wants_json(tty) is False
    finally:
        os.close(leader)
        os.close(follower)
    out = io.StringIO()
    assert wants_json(out) is True
    configure(1, stream=out)
    structlog.get_logger().info("round.finished", round=3)
    assert json.loads(out.getvalue())["event"] == "round.finished"


def test_quiet_by_default_and_more_with_each_v(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    configure(0, json=False, stream=out)
    log = structlog.get_logger()
    log.info("hidden")
    log.warning("shown")
    assert "hidden" not in out.getvalue() and "shown" in out.getvalue()
    assert level_for(1) == 20 and level_for(2) == 10 and level_for(5) == 10
    monkeypatch.setenv("FLAME_LOG_LEVEL", "error")
    assert level_for(2) == 40  # the environment wins
    monkeypatch.setenv("FLAME_LOG_JSON", "false")
    assert wants_json(io.StringIO()) is False
