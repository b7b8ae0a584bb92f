"""TLS on every hop of a stack that `flamectl up` starts: REST, the controller's and the
notifier's gRPC ports and the data plane refuse a plaintext client and a client that trusts
another CA; the controller also refuses a TLS client without the services' certificate; a node
enrols and comes online over TLS; an MQTT broker with TLS refuses the same strangers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import paho.mqtt.client as mqtt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flame.channels.discovery import StaticDiscovery
from flame.channels.grpc import GrpcTransport
from flame.cli.stack import Stack, StackState
from flame.connect import Security, ssl_context
from flame_proto.v1 import data_pb2, data_pb2_grpc
from flame_spec.pki import DATA_PLANE_NAME, Authority

DEADLINE = 120.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    home = tmp_path_factory.mktemp("tls-stack")
    runner = Stack(home)
    state = runner.up(nodes=1, timeout=DEADLINE * 2, mlflow=False)
    try:
        yield state
    finally:
        runner.down(state)


@pytest.fixture(scope="module")
def stranger_ca() -> Authority:
    return Authority.create("a CA nobody here trusts")


def _pki(state: StackState) -> Path:
    return Path(state.home) / "pki"


async def _health(
    target: str, creds: grpc.ChannelCredentials | None, server_name: str | None = None
) -> grpc.StatusCode:
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    channel = (
        grpc.aio.secure_channel(target, creds, options=options)
        if creds is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=20)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


def test_rest_refuses_plaintext_and_a_foreign_ca(stack: StackState, stranger_ca: Authority) -> None:
    assert stack.api_url.startswith("https://")
    with stack.client() as api:
        assert api.get("/readyz").status_code == 200
    plain = stack.api_url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/readyz", timeout=20)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(
            f"{stack.api_url}/readyz",
            verify=ssl_context(Security(ca=stranger_ca.cert_pem)),
            timeout=20,
        )


async def test_controller_admits_only_the_services_certificate(
    stack: StackState, stranger_ca: Authority
) -> None:
    pki = _pki(stack)
    ca = (pki / "ca.pem").read_bytes()
    services = ((pki / "services.key").read_bytes(), (pki / "services.pem").read_bytes())
    other = stranger_ca.issue("intruder", ["127.0.0.1"])
    target = stack.controller
    assert await _health(target, None) == grpc.StatusCode.UNAVAILABLE  # plaintext
    # TLS that trusts the stack, but no client certificate: a task or a local user
    assert await _health(target, grpc.ssl_channel_credentials(ca)) == grpc.StatusCode.UNAVAILABLE
    # a client certificate from another CA
    foreign = grpc.ssl_channel_credentials(ca, other.key_pem, other.cert_pem)
    assert await _health(target, foreign) == grpc.StatusCode.UNAVAILABLE
    # a client that trusts another CA does not accept the controller
    wrong_trust = grpc.ssl_channel_credentials(stranger_ca.cert_pem, *services)
    assert await _health(target, wrong_trust) == grpc.StatusCode.UNAVAILABLE
    # the apiserver's and notifier's certificate gets in
    assert await _health(target, grpc.ssl_channel_credentials(ca, *services)) == (
        grpc.StatusCode.OK
    )


async def test_notifier_speaks_only_tls(stack: StackState, stranger_ca: Authority) -> None:
    ca = (_pki(stack) / "ca.pem").read_bytes()
    target = stack.notifier
    assert await _health(target, None) == grpc.StatusCode.UNAVAILABLE
    wrong_trust = grpc.ssl_channel_credentials(stranger_ca.cert_pem)
    assert await _health(target, wrong_trust) == grpc.StatusCode.UNAVAILABLE
    # flamelets hold tokens, not certificates: trusting the stack CA is enough to connect
    assert await _health(target, grpc.ssl_channel_credentials(ca)) == grpc.StatusCode.OK


def test_a_node_enrols_and_comes_online_over_tls(stack: StackState) -> None:
    identity = (Path(stack.nodes["node-0"]) / "identity.json").read_text()
    assert '"server": "https://' in identity and "BEGIN CERTIFICATE" in identity
    deadline = time.monotonic() + DEADLINE
    with stack.client() as api:
        while True:
            nodes = api.get("/v1/nodes").json()["items"]
            if [n["presence"] for n in nodes] in (["online"], ["PRESENCE_ONLINE"]):
                break
            assert time.monotonic() < deadline, nodes
            time.sleep(0.2)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[GrpcTransport, Authority]]:
    ca = Authority.derived(b"s" * 32, "Flame data-plane CA")
    pair = ca.issue("job/agg", [DATA_PLANE_NAME])
    security = Security(ca=ca.cert_pem, cert=pair.cert_pem, key=pair.key_pem)
    transport = GrpcTransport("agg", StaticDiscovery({}), security=security)
    await transport.serve()
    try:
        yield transport, ca
    finally:
        await transport.close()


async def _send(endpoint: str, creds: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    options = [("grpc.ssl_target_name_override", DATA_PLANE_NAME)]
    channel = (
        grpc.aio.secure_channel(endpoint, creds, options=options)
        if creds is not None
        else grpc.aio.insecure_channel(endpoint)
    )

    async def chunks() -> AsyncIterator[data_pb2.Chunk]:
        yield data_pb2.Chunk(message_id="m", index=0, count=1)

    async with channel:
        try:
            async for _ in data_pb2_grpc.DataChannelStub(channel).Stream(chunks(), timeout=20):
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_data_plane_peers_refuse_plaintext_and_foreign_certificates(
    peer: tuple[GrpcTransport, Authority], stranger_ca: Authority
) -> None:
    transport, ca = peer
    endpoint = transport.endpoint
    assert await _send(endpoint, None) == grpc.StatusCode.UNAVAILABLE
    other = stranger_ca.issue("job/intruder", [DATA_PLANE_NAME])
    foreign = grpc.ssl_channel_credentials(ca.cert_pem, other.key_pem, other.cert_pem)
    assert await _send(endpoint, foreign) == grpc.StatusCode.UNAVAILABLE
    no_cert = grpc.ssl_channel_credentials(ca.cert_pem)
    assert await _send(endpoint, no_cert) == grpc.StatusCode.UNAVAILABLE
    # a member of the job gets through TLS; its junk chunk is then refused by the channel
    member = ca.issue("job/t1", [DATA_PLANE_NAME])
    good = grpc.ssl_channel_credentials(ca.cert_pem, member.key_pem, member.cert_pem)
    assert await _send(endpoint, good) not in (grpc.StatusCode.UNAVAILABLE,)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, Authority]]:
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    ca = Authority.create("broker CA")
    pair = ca.issue("broker", ["127.0.0.1"])
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "server.pem").write_bytes(pair.cert_pem)
    (tmp_path / "server.key").write_bytes(pair.key_pem)
    port = _free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"cafile {tmp_path / 'ca.pem'}\ncertfile {tmp_path / 'server.pem'}\n"
        f"keyfile {tmp_path / 'server.key'}\nuser root\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "broker did not start"
                time.sleep(0.05)
        yield port, ca
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)


def _mqtt_connects(port: int, ca: bytes | None) -> bool:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if ca is not None:
        client.tls_set_context(ssl_context(Security(ca=ca)))  # type: ignore[arg-type]
    try:
        return bool(client.connect("127.0.0.1", port, keepalive=10) == mqtt.MQTT_ERR_SUCCESS) and (
            _connack(client)
        )
    except OSError:
        return False
    finally:
        client.disconnect()


def _connack(client: mqtt.Client) -> bool:
    done: list[bool] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: done.append(not rc.is_failure)
    deadline = time.monotonic() + 20
    while not done and time.monotonic() < deadline:
        if client.loop(timeout=0.2) != mqtt.MQTT_ERR_SUCCESS:
            return False
    return bool(done and done[0])


def test_mqtt_broker_with_tls_refuses_plaintext_and_a_foreign_ca(
    tls_broker: tuple[int, Authority], stranger_ca: Authority
) -> None:
    port, ca = tls_broker
    assert _mqtt_connects(port, ca.cert_pem)
    assert not _mqtt_connects(port, None)
    assert not _mqtt_connects(port, stranger_ca.cert_pem)


def test_stack_ca_key_is_private(stack: StackState) -> None:
    pki = _pki(stack)
    for name in ("ca.key", "services.key"):
        assert (pki / name).stat().st_mode & 0o077 == 0, name
