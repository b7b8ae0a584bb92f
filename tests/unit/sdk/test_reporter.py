"""The control-plane reporter keeps every metric batch until the control plane took it: against
a real HTTP server on loopback that answers 503 (restarting), refuses, or is not there at all."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flame.outbox import Outbox
from flame.tracking import ControlPlaneReporter, TrackingResult


class Api:
    """A stand-in apiserver: answers ``script`` statuses in turn (then 200), records what
    it accepted."""

    def __init__(self, port: int = 0, script: list[int] | None = None) -> None:
        self.script = list(script or [])
        self.accepted: list[dict] = []
        self.requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests += 1
                status = api.script.pop(0) if api.script else 200
                if status == 200:
                    api.accepted.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def steps(self) -> list[int]:
        return [m["step"] for body in self.accepted for m in body["metrics"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[Api]:
    a = Api(script=[503, 503, 503])
    yield a
    a.close()


def reporter(url: str, **kwargs: object) -> ControlPlaneReporter:
    opts: dict = {"retry_initial": 0.01, "retry_max": 0.05, "drain_timeout": 30.0, **kwargs}
    return ControlPlaneReporter(url, "token", "agg-0", timeout=5.0, **opts)


def test_batches_refused_with_503_are_kept_and_sent_again_in_order(api: Api) -> None:
    r = reporter(api.url)
    for step in range(5):
        r.log_round(step, {"accuracy": step / 10})
        r.flush()  # the control plane is restarting: every round waits
    r.finish()
    assert api.steps() == [0, 1, 2, 3, 4]
    assert [m["value"] for b in api.accepted for m in b["metrics"]] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert len(r.outbox) == 0


def test_the_rounds_since_the_last_flush_go_in_one_request() -> None:
    api = Api()
    try:
        r = reporter(api.url)
        for step in range(30):
            r.log_round(step, {"accuracy": step / 100, "loss": 1.0})
        r.flush()
        r.log_round(30, {"accuracy": 0.3})
        r.finish()
        assert api.requests == 2
        assert api.steps() == [s for s in range(30) for _ in range(2)] + [30]
    finally:
        api.close()


def test_reporting_never_waits_for_a_control_plane_that_is_down(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = reporter(f"http://127.0.0.1:{port}", retry_initial=5.0, retry_max=5.0)
    started = time.monotonic()
    for step in range(20):
        r.log_round(step, {"accuracy": 0.5})
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, elapsed  # one refused connect, then it waits out its backoff
    assert len(r.outbox) == 20
    api = Api(port=port)  # the control plane is back
    try:
        more = list(range(20, 22))
        for step in more:
            r.log_round(step, {"accuracy": 0.5})
        r.report_result(TrackingResult(run_uri="http://mlflow/run", model_uri="models:/m@best"))
        r.finish()
        assert api.steps() == list(range(22))
        assert api.accepted[-1] == {
            "metrics": [],
            "run_uri": "http://mlflow/run",
            "model_uri": "models:/m@best",
        }
    finally:
        api.close()


def test_a_refused_round_is_dropped_and_the_rest_go_on() -> None:
    # the merged request is refused, then (sent alone) round 0; rounds 1 and 2 are taken
    api = Api(script=[400, 400])
    try:
        r = reporter(api.url)
        for step in range(3):
            r.log_round(step, {"accuracy": step / 10})
        r.finish()
        assert api.steps() == [1, 2] and api.requests == 4
    finally:
        api.close()


def test_a_long_outage_waits_on_disk_not_in_memory(tmp_path: Path) -> None:
    api = Api(script=[503] * 10_000)
    spill = tmp_path / "metrics-outbox.jsonl"
    try:
        r = reporter(api.url, spill=spill, memory_limit=3, retry_initial=0.001, retry_max=0.001)
        for step in range(10):
            time.sleep(0.002)  # let each call try again (the control plane still says 503)
            r.log_round(step, {"accuracy": step / 10})
        assert r.outbox.in_memory == 3 and len(r.outbox) == 10
        assert len(spill.read_text().splitlines()) == 7
        api.script.clear()  # back
        r.finish()
        assert api.steps() == list(range(10))
        assert not spill.exists()
    finally:
        api.close()


def test_what_a_killed_process_left_on_disk_is_sent_first(tmp_path: Path) -> None:
    spill = tmp_path / "metrics-outbox.jsonl"
    left = Outbox(spill, memory_limit=1)
    for step in range(3):
        left.put({"metrics": [{"key": "accuracy", "value": 0.5, "step": step}]})
    # the process dies here: the batch in memory is gone, the two on disk are not
    api = Api()
    try:
        r = reporter(api.url, spill=spill, memory_limit=1)
        r.log_round(3, {"accuracy": 0.5})
        r.finish()
        assert api.steps() == [1, 2, 3]
    finally:
        api.close()


def test_finish_gives_up_after_its_drain_timeout() -> None:
    api = Api(script=[503] * 10_000)
    try:
        r = reporter(api.url, drain_timeout=0.3)
        r.log_round(0, {"accuracy": 0.5})
        started = time.monotonic()
        r.finish()
        assert 0.25 <= time.monotonic() - started < 5.0
        assert api.accepted == [] and len(r.outbox) == 1
    finally:
        api.close()
