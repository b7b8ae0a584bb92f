"""`flamectl up` / `down` / `up` again on one home: the store, its admin token and the enrolled
flamelets carry over (a second `make demo` or a restarted laptop must just work)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flame.cli.client import FlameClient
from flame.cli.stack import Stack, StackError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _online(client: FlameClient) -> set[str]:
    return {n.name for n in client.list_nodes() if n.presence == "online"}


def test_a_second_up_on_the_same_home_reuses_store_token_and_nodes(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack")
    first = stack.up(nodes=1, mlflow=False)
    try:
        with FlameClient(first.api_url, first.admin_token, security=first.security()) as client:
            project = client.create_project("kept")
        with pytest.raises(StackError, match="already running"):
            stack.up(nodes=1, mlflow=False)
    finally:
        stack.down(first)

    second = stack.up(nodes=1, mlflow=False)
    try:
        assert (second.api_url, second.admin_token) == (first.api_url, first.admin_token)
        with FlameClient(second.api_url, second.admin_token, security=second.security()) as client:
            assert client.get_project(project.id).name == "kept"
            deadline = time.monotonic() + 60
            while _online(client) != {"node-0"}:
                assert time.monotonic() < deadline, client.list_nodes()
                time.sleep(0.1)
            assert len(client.list_nodes()) == 1  # the node was not enrolled twice
    finally:
        stack.down(second)
