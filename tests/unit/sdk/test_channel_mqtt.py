"""mqtt-backend behaviour beyond the shared contract, against brokers this test starts itself:
TLS with username/password, a refused login, a broker restart, strangers on our topics."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from flame.channels import ChannelSet, open_channels
from flame.channels.chunking import chunks_of
from flame.channels.settings import ChannelSettings
from flame.config import ChannelMembership, DesignSchema, JobSpec, MqttSettings, PeerRef, TaskConfig
from flame.errors import ChannelError, PeerTimeout
from flame.messages import Message

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None or shutil.which("openssl") is None,
    reason="needs mosquitto and openssl",
)
DESIGN = DesignSchema.model_validate(
    {
        "roles": [{"name": "trainer", "isDataConsumer": True}, {"name": "aggregator"}],
        "channels": [{"name": "param", "pair": ["trainer", "aggregator"]}],
    }
)
SETTINGS = ChannelSettings(send_timeout=10, connect_timeout=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A mosquitto child process on its own port; stopped by its pid."""

    def __init__(self, workdir: Path, port: int, extra: str = "") -> None:
        self.port = port
        self.conf = workdir / f"mosquitto-{port}.conf"
        # user root: mosquitto started as root would switch to "mosquitto", who cannot read
        # pytest's private tmp dir
        self.conf.write_text(f"listener {port} 127.0.0.1\npersistence false\nuser root\n{extra}")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.stderr.read().decode()) from None  # type: ignore[union-attr]
                time.sleep(0.02)
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def _config(job: str, task: str, peers: dict[str, str], settings: MqttSettings) -> TaskConfig:
    return TaskConfig(
        job_id=job,
        job_name="m",
        task_id=task,
        role="aggregator" if task == "agg" else "trainer",
        design=DESIGN,
        job=JobSpec(),
        channels={
            "param": ChannelMembership(
                name="param",
                group="default",
                backend="mqtt",
                peers=[PeerRef(task_id=t, role=r) for t, r in peers.items()],
            )
        },
        mqtt=settings,
    )


async def _pair(settings: MqttSettings) -> tuple[str, ChannelSet, ChannelSet]:
    job = uuid.uuid4().hex[:12]
    agg = await open_channels(_config(job, "agg", {"t1": "trainer"}, settings), settings=SETTINGS)
    t1 = await open_channels(_config(job, "t1", {"agg": "aggregator"}, settings), settings=SETTINGS)
    return job, agg, t1


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, Path]]:
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=flame-ca",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(tmp_path / "passwd"), "flame", "s3cret"],
        check=True,
        capture_output=True,
    )
    for f in tmp_path.iterdir():
        f.chmod(0o644)
    broker = Broker(
        tmp_path,
        _free_port(),
        f"allow_anonymous false\npassword_file {tmp_path / 'passwd'}\n"
        f"cafile {tmp_path / 'ca.crt'}\ncertfile {tmp_path / 'server.crt'}\n"
        f"keyfile {tmp_path / 'server.key'}\n",
    )
    broker.start()
    yield broker, tmp_path / "ca.crt"
    broker.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path, _free_port(), "allow_anonymous true\n")
    b.start()
    yield b
    b.stop()


async def test_tls_with_username_and_password(tls_broker: tuple[Broker, Path]) -> None:
    b, ca = tls_broker
    good = MqttSettings(port=b.port, username="flame", password="s3cret", tls=True, ca_file=str(ca))
    _, agg, t1 = await _pair(good)
    try:
        w = {"w": np.arange(10, dtype=np.float32)}
        await t1["param"].send("agg", Message("update", weights=w))
        got = await agg["param"].recv("t1", timeout=5)
        assert got.weights is not None
        np.testing.assert_array_equal(got.weights["w"], w["w"])
    finally:
        await t1.close()
        await agg.close()

    bad = good.model_copy(update={"password": "wrong"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ChannelError, match="refused"):
        await open_channels(_config("j", "agg", {}, bad), settings=SETTINGS)
    assert loop.time() - started < SETTINGS.connect_timeout  # refused at once, not timed out


async def test_channels_reconnect_after_a_broker_restart(broker: Broker) -> None:
    _, agg, t1 = await _pair(MqttSettings(port=broker.port))
    try:
        await t1["param"].send("agg", Message("update", round=1))
        assert (await agg["param"].recv("t1", timeout=5)).round == 1
        broker.stop()
        broker.start()  # same port, empty: no sessions, no retained presence
        await t1["param"].send("agg", Message("update", round=2))
        assert (await agg["param"].recv("t1", timeout=10)).round == 2
        await agg["param"].send("t1", Message("weights", round=3))
        assert (await t1["param"].recv("agg", timeout=10)).round == 3
    finally:
        await t1.close()
        await agg.close()


async def test_strangers_and_garbage_on_our_topic_are_ignored(broker: Broker) -> None:
    job, agg, t1 = await _pair(MqttSettings(port=broker.port))
    raw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    raw.connect("127.0.0.1", broker.port)
    raw.loop_start()
    try:
        topic = f"flame/{job}/param/agg"
        intruder = Message("update", sender="t9", job_id=job, channel="param")
        other_job = Message("update", sender="t1", job_id="other", channel="param")
        for m in (intruder, other_job):
            for c in chunks_of(m, "agg", 1024):
                raw.publish(topic, c, qos=1).wait_for_publish(5)
        raw.publish(topic, b"\xff\xfenot a chunk", qos=1).wait_for_publish(5)
        await t1["param"].send("agg", Message("update", round=7))
        got = await agg["param"].recv("t1", timeout=5)
        assert got.round == 7
        with pytest.raises(PeerTimeout):
            await agg["param"].recv_any(timeout=0.2)
    finally:
        raw.loop_stop()
        raw.disconnect()
        await t1.close()
        await agg.close()


async def test_a_peer_that_left_is_not_waited_for_forever(broker: Broker) -> None:
    _, agg, t1 = await _pair(MqttSettings(port=broker.port))
    fast = ChannelSettings(send_timeout=0.3)
    await agg.close()
    try:
        transport = t1["param"].transport  # type: ignore[attr-defined]
        transport.settings = fast
        # agg's cleared presence reaches t1 through the broker: a send before it would still
        # find agg there (CI once sent first and the test saw no PeerTimeout)
        deadline = time.monotonic() + 60
        while transport._presence("agg").is_set():
            assert time.monotonic() < deadline, "t1 never saw agg leave"
            await asyncio.sleep(0.02)
        with pytest.raises(PeerTimeout, match="not connected"):
            await t1["param"].send("agg", Message("update"))
    finally:
        await t1.close()


CHILD = """
import asyncio, sys
from flame.channels import open_channels
from flame.channels.settings import ChannelSettings
from flame.config import TaskConfig

async def main() -> None:
    chans = await open_channels(
        TaskConfig.model_validate_json(sys.argv[1]),
        settings=ChannelSettings(mqtt_keepalive=1, connect_timeout=5),
    )
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_peer_that_dies_is_detected_by_its_will(broker: Broker) -> None:
    job = uuid.uuid4().hex[:12]
    settings = MqttSettings(port=broker.port)
    agg = await open_channels(
        _config(job, "agg", {"t1": "trainer"}, settings),
        settings=ChannelSettings(send_timeout=2, connect_timeout=5),
    )
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            _config(job, "t1", {"agg": "aggregator"}, settings).model_dump_json(),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:  # log lines, then "ready"
            if line.strip() == "ready":
                break
        await agg["param"].send("t1", Message("weights"))  # t1 is there
        child.kill()  # no clean close: only the broker's will tells the others
        child.wait(10)
        with pytest.raises(PeerTimeout, match="not connected"):
            deadline = asyncio.get_running_loop().time() + 10
            while asyncio.get_running_loop().time() < deadline:
                await agg["param"].send("t1", Message("weights"))  # accepted until the will fires
    finally:
        if child.poll() is None:
            child.kill()
        await agg.close()
