"""Chaos: creates whose answer is lost (issue 17, point 6) on the real stack.

A create can be carried out by the controller while its client sees only a broken connection
(the apiserver SIGKILLed mid-request, or the answer lost on the way back). Retried with the same
``Idempotency-Key`` it must yield exactly one resource; retried without one it duplicates,
which the first test shows as well, so it cannot pass by accident.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from flame.cli.client import RETRYABLE_STATUSES, ApiError, FlameClient
from flame.cli.stack import Stack, StackState

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, StackState]]:
    home: Path = tmp_path_factory.mktemp("idempotency")
    s = Stack(home, tls=False)  # the answer-dropping proxy reads plaintext HTTP
    state = s.up(nodes=0, timeout=180, mlflow=False)
    try:
        yield s, state
    finally:
        s.down(state)


class AnswerDropper:
    """A loopback TCP proxy that passes each request on to the apiserver, waits for the start of
    its answer (so the create has been carried out) and then resets the client's connection
    instead of passing the answer back."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.dropped = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with client, socket.create_connection(self.target, timeout=60) as upstream:
                upstream.sendall(_read_request(client))
                if upstream.recv(1):  # the apiserver has answered: the controller is done
                    self.dropped += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")

    def close(self) -> None:
        self.server.close()


def _read_request(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _tokens(client: FlameClient, user_id: str, description: str) -> list[str]:
    return [t.id for t in client.list_tokens(user_id) if t.description == description]


def test_an_answer_lost_after_the_create_is_recovered_by_the_retry_with_its_key(
    stack: tuple[Stack, StackState],
) -> None:
    _, state = stack
    proxy = AnswerDropper(state.api_url)
    auth = {"Authorization": f"Bearer {state.admin_token}"}
    try:
        with FlameClient(state.api_url, state.admin_token) as client:
            me = client.whoami().subject
            path = f"/v1/users/{me}/tokens"
            for with_key in (True, False):
                description = f"lost-answer-{'key' if with_key else 'no-key'}"
                body = {"description": description, "scopes": ["read"]}
                headers = {**auth, "Idempotency-Key": str(uuid.uuid4())} if with_key else auth
                with pytest.raises(httpx.TransportError):  # the client learns nothing ...
                    httpx.post(proxy.url + path, json=body, headers=headers, timeout=60)
                assert len(_tokens(client, me, description)) == 1  # ... but it was created
                retry = httpx.post(state.api_url + path, json=body, headers=headers, timeout=60)
                assert retry.status_code == 201, retry.text
                made = _tokens(client, me, description)
                if with_key:  # exactly one, and the secret the retry got is that token's
                    assert made == [retry.json()["id"]]
                    with FlameClient(state.api_url, retry.json()["token"]) as holder:
                        assert holder.whoami().subject == me
                else:  # the duplicate the key prevents
                    assert len(made) == 2
        assert proxy.dropped == 2
    finally:
        proxy.close()


class CountingClient(FlameClient):
    """Counts the attempts that ended without a definite answer (and were retried)."""

    unknown = 0
    lock = threading.Lock()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return super().request(method, path, **kwargs)
        except ApiError as exc:
            if exc.status in RETRYABLE_STATUSES:
                with CountingClient.lock:
                    CountingClient.unknown += 1
            raise


def _wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("control plane not ready again")


def test_creates_survive_sigkilled_apiservers_and_controllers_with_one_resource_each(
    stack: tuple[Stack, StackState],
) -> None:
    s, state = stack
    rng = random.Random(17)
    workers = 4
    chaos_over = threading.Event()
    with FlameClient(state.api_url, state.admin_token) as client:
        me = client.whoami().subject

    def work(w: int) -> list[tuple[str, str]]:
        """Create tokens and projects until the chaos is over (and at least a few)."""
        made = []
        with CountingClient(state.api_url, state.admin_token, create_retry_seconds=300) as c:
            i = 0
            while not chaos_over.is_set() or i < 3:
                token = c.create_token(me, description=f"storm-{w}-{i}", scopes=["read"])
                project = c.create_project(f"storm-{w}-{i}")
                made += [("token", token.id), ("project", project.id)]
                i += 1
        return made

    kills = ["apiserver", "apiserver", "controller"] * 3
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(work, w) for w in range(workers)]
        try:
            for service in kills:
                time.sleep(rng.uniform(0.2, 1.0))
                s.kill(state, service)
                time.sleep(rng.uniform(0.0, 0.3))
                s.respawn(state, service)
                _wait_ready(state.api_url)
        finally:
            chaos_over.set()
        made = [item for f in futures for item in f.result()]

    with FlameClient(state.api_url, state.admin_token) as client:
        tokens = [t for t in client.list_tokens(me) if t.description.startswith("storm-")]
        projects = [p for p in client.list_projects() if p.name.startswith("storm-")]
    # one resource per create, and it is the one the create returned
    assert sorted(t.id for t in tokens) == sorted(i for kind, i in made if kind == "token")
    assert sorted(p.id for p in projects) == sorted(i for kind, i in made if kind == "project")
    logs = "".join(Path(p.log).read_text() for p in state.procs if p.name == "controller")
    print(
        f"\n{len(made)} creates, kills {kills}, {CountingClient.unknown} attempts without "
        f"an answer retried; answered from the key's record: {logs.count('idempotency.replayed')}"
        f", finished by the retry after the first attempt wrote: "
        f"{logs.count('idempotency.resumed')}"
    )
