"""The example Mosquitto ACL (deploy/mosquitto) confines each job's account to its topics,
on a real broker started for the test."""

from __future__ import annotations

import getpass
import queue
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

DEPLOY = Path(__file__).parents[2] / "deploy" / "mosquitto"
DEADLINE = 60.0

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None,
    reason="mosquitto is not installed",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    passwd = tmp_path / "flame.passwd"
    for i, job in enumerate(["job-a", "job-b"]):
        flags = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", "-b", *flags, str(passwd), job, f"pw-{job}"], check=True
        )
    port = _free_port()
    conf = (DEPLOY / "mosquitto.conf").read_text()
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/etc/mosquitto/flame.passwd", str(passwd))
    conf = conf.replace("/etc/mosquitto/flame.acl", str(DEPLOY / "flame.acl"))
    conf += f"user {getpass.getuser()}\n"  # as root it would drop to a user who cannot read tmp
    (tmp_path / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "broker.log").open("w"),
    )
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    log = (tmp_path / "broker.log").read_text()
                    raise RuntimeError(f"the test broker did not start: {log}") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)


class Client:
    def __init__(self, port: int, user: str, password: str) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-test")
        self.c.username_pw_set(user, password)
        self.c.on_message = lambda _c, _u, m: self.got.put((m.topic, m.payload))
        self.c.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(
            [int(getattr(x, "value", x)) for x in codes]
        )
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def subscribe(self, topic: str) -> list[int]:
        self.c.subscribe(topic, qos=1)
        return self.subacks.get(timeout=DEADLINE)

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(timeout=DEADLINE)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_a_job_can_neither_listen_to_nor_publish_into_another_jobs_topics(broker: int) -> None:
    a = Client(broker, "job-a", "pw-job-a")
    b = Client(broker, "job-b", "pw-job-b")
    try:
        assert a.subscribe("flame/job-a/#") == [1]
        b.subscribe("flame/job-a/#")  # granted, but the ACL keeps job-a's messages from it
        b.subscribe("flame/job-b/#")
        b.publish("flame/job-a/param/trainer-0", b"forged by job-b")
        a.publish("flame/job-a/param/trainer-0", b"from job-a")
        assert a.got.get(timeout=DEADLINE) == ("flame/job-a/param/trainer-0", b"from job-a")
        # a marker on job-b's own topic: what job-b would have got from job-a comes before it
        b.publish("flame/job-b/marker", b"m")
        assert b.got.get(timeout=DEADLINE) == ("flame/job-b/marker", b"m")
        assert a.got.empty() and b.got.empty()  # job-b's publish was dropped, nothing leaked
    finally:
        a.close()
        b.close()


def test_anonymous_and_unknown_clients_are_refused(broker: int) -> None:
    for user, password in [(None, None), ("job-a", "wrong")]:
        answers: queue.Queue[int] = queue.Queue()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="intruder")
        if user is not None:
            c.username_pw_set(user, password)
        c.on_connect = lambda _c, _u, _f, rc, _p: answers.put(int(getattr(rc, "value", rc)))
        c.connect("127.0.0.1", broker)
        c.loop_start()
        try:
            assert answers.get(timeout=DEADLINE) != 0  # "not authorised"
        finally:
            c.loop_stop()
