"""The real control plane on loopback for end-to-end tests.

``stack`` (session-scoped) runs the controller's gRPC server (SQLite in a tmp dir; the API only:
no reconciler workers and no notifier, so jobs are created but never deployed) and the apiserver
under real uvicorn, both on free 127.0.0.1 ports, in one background event
loop. ``flamectl`` runs the CLI as a subprocess with its own config file. Reuse them::

    def test_x(stack, flamectl):
        flamectl("login", "--server", stack.api_url, "--token", stack.admin_token)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

from flame_apiserver import ApiserverSettings, create_app
from flame_controller.server import serve
from flame_controller.settings import ControllerSettings
from tests.support import service_token_file

T = TypeVar("T")
FLAMECTL = str(Path(sys.executable).with_name("flamectl"))


class LoopThread:
    """An asyncio loop in a daemon thread, so sync tests can drive async servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stack-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass(frozen=True)
class Stack:
    api_url: str
    admin_token: str
    controller_port: int
    data_dir: Path

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=30)


def wait_until(check: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("stack")
    admin_token = f"flm_user_{secrets.token_urlsafe(32)}"
    token_file = service_token_file(data_dir.parent / "secrets")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    api_port = sock.getsockname()[1]
    api_url = f"http://127.0.0.1:{api_port}"
    loop = LoopThread()
    controller = loop.run(
        serve(
            ControllerSettings(
                data_dir=data_dir,
                listen="127.0.0.1:0",
                apiserver_url=api_url,
                admin_token=admin_token,
                notifier_address="127.0.0.1:1",  # no notifier in these tests
                run_reconciler=False,
                service_token_file=token_file,
            ),
            workers=[],
        )
    )
    settings = ApiserverSettings(
        controller_address=f"127.0.0.1:{controller.port}", service_token_file=token_file
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", lifespan="on", access_log=False)
    )
    serving = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), loop.loop)
    wait_until(lambda: server.started or serving.done(), what="uvicorn")
    if serving.done():
        serving.result()  # raises what stopped it
    try:
        wait_until(lambda: httpx.get(f"{api_url}/readyz").status_code == 200, what="readyz")
        yield Stack(api_url, admin_token, controller.port, data_dir)
    finally:
        server.should_exit = True
        serving.result(30)
        loop.run(controller.stop())
        loop.close()
        sock.close()


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


class Flamectl:
    """Runs ``flamectl`` as a user would, with its own config file (``$FLAME_CONFIG``)."""

    def __init__(self, config: Path) -> None:
        self.config = config

    def __call__(self, *args: str, check: bool = True, cwd: Path | None = None) -> Result:
        env = {**os.environ, "FLAME_CONFIG": str(self.config), "COLUMNS": "200", "NO_COLOR": "1"}
        proc = subprocess.run(
            [FLAMECTL, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"flamectl {' '.join(args)} failed: {result}")
        return result


@pytest.fixture
def flamectl(tmp_path: Path) -> Flamectl:
    return Flamectl(tmp_path / "flame" / "config.yaml")
