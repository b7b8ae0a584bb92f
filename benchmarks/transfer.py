"""Moving one 1 GB model between two tasks over the grpc and mqtt channels, against each
library alone moving the same bytes.

Sender and receiver are separate processes (as in a real job), so each one's peak RSS is its
own. Reported per backend: the median time of a small request/reply (digits-sized weights,
one process); end-to-end throughput (send start to the receiver holding the whole model,
sha256 checked) of flame's channel and, interleaved in the same run, of the bare library: a
grpc.aio client stream of raw 1 MiB chunks into one buffer, and paho publishing 2 MiB QoS 1
chunks through the broker at 127.0.0.1:1883 into one buffer (each channel's default chunk
size); each side's peak RSS as a multiple of the model. Targets: throughput >= 0.8x the
library alone, peak RSS <= 2x the model on each side.
Usage: python -m benchmarks.transfer [--mb 1000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import resource
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from flame.channels import InprocHub, open_channels
from flame.channels.discovery import MemoryDiscovery
from flame.channels.settings import ChannelSettings
from flame.config import (
    ChannelMembership,
    DesignSchema,
    DiscoverySettings,
    JobSpec,
    PeerRef,
    TaskConfig,
)
from flame.messages import Message

ROOT = Path(__file__).resolve().parent.parent
TENSORS = 10
TARGET_PEAK_X = 2.0
DESIGN = DesignSchema.model_validate(
    {
        "roles": [{"name": "trainer", "isDataConsumer": True}, {"name": "aggregator"}],
        "channels": [{"name": "param", "pair": ["trainer", "aggregator"]}],
    }
)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _config(job: str, me: str, peer: str, backend: str, port: int) -> TaskConfig:
    roles = {"agg": "aggregator", "t1": "trainer"}
    return TaskConfig(
        job_id=job,
        job_name="bench",
        task_id=me,
        role=roles[me],
        design=DESIGN,
        job=JobSpec(round_timeout=300),
        channels={
            "param": ChannelMembership(
                name="param",
                group="default",
                backend=backend,  # type: ignore[arg-type]  # a Backend name from the CLI
                peers=[PeerRef(task_id=peer, role=roles[peer])],
            )
        },
        discovery=DiscoverySettings(endpoints={"agg": f"127.0.0.1:{port}"}),
    )


def _digest(weights: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(weights[k].data)
    return h.hexdigest()


async def _receiver(job: str, backend: str, port: int) -> dict[str, object]:
    settings = ChannelSettings(send_timeout=300, connect_timeout=30)
    chans = await open_channels(_config(job, "agg", "t1", backend, port), settings=settings)
    try:
        before = _rss()
        print(json.dumps({"ready": True}), flush=True)
        msg = await chans["param"].recv("t1", timeout=300)
        done = time.time()
        assert msg.weights is not None
        return {"done_at": done, "sha256": _digest(msg.weights), "rss_before": before}
    finally:
        await chans.close()


async def _sender(job: str, backend: str, port: int, mb: int) -> dict[str, object]:
    settings = ChannelSettings(send_timeout=300, connect_timeout=30)
    chans = await open_channels(_config(job, "t1", "agg", backend, port), settings=settings)
    try:
        rng = np.random.default_rng(0)
        n = mb * 1_000_000 // 4 // TENSORS
        model = {f"layer{i}": rng.standard_normal(n, dtype=np.float32) for i in range(TENSORS)}
        before = _rss()
        started = time.time()
        await chans["param"].send("agg", Message("update", weights=model))
        return {
            "started_at": started,
            "send_returned_s": time.time() - started,
            "sha256": _digest(model),
            "bytes": sum(v.nbytes for v in model.values()),
            "rss_before": before,
        }
    finally:
        await chans.close()


BARE_GRPC_CHUNK = 1 << 20  # flame's grpc_chunk_bytes default
BARE_MQTT_CHUNK = 2 << 20  # flame's mqtt_chunk_bytes default
BARE_TOPIC = "flame-bench/{job}/bare"


def _model_bytes(mb: int) -> int:
    return mb * 1_000_000 // 4 // TENSORS * 4 * TENSORS


def _bare_model(mb: int) -> bytes:
    """The same bytes the flame sender moves (its tensors, end to end)."""
    rng = np.random.default_rng(0)
    n = mb * 1_000_000 // 4 // TENSORS
    return b"".join(rng.standard_normal(n, dtype=np.float32).tobytes() for _ in range(TENSORS))


async def _bare_grpc_receiver(port: int, mb: int) -> dict[str, object]:
    """grpc.aio with no protobuf: a client stream of raw byte chunks into one buffer."""
    import grpc

    size = _model_bytes(mb)
    buf = bytearray(size)
    got = asyncio.get_running_loop().create_future()

    async def send(chunks: Any, _context: Any) -> bytes:
        at = 0
        async for chunk in chunks:
            buf[at : at + len(chunk)] = chunk
            at += len(chunk)
        got.set_result(time.time())
        return b""

    handler = grpc.method_handlers_generic_handler(
        "bench.Bare", {"Send": grpc.stream_unary_rpc_method_handler(send)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    before = _rss()
    print(json.dumps({"ready": True}), flush=True)
    done = await got
    await server.stop(grace=1)
    return {"done_at": done, "sha256": hashlib.sha256(buf).hexdigest(), "rss_before": before}


async def _bare_grpc_sender(port: int, mb: int) -> dict[str, object]:
    import grpc

    model = _bare_model(mb)
    before = _rss()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        send = channel.stream_unary("/bench.Bare/Send")
        view = memoryview(model)

        async def chunks() -> Any:
            for at in range(0, len(model), BARE_GRPC_CHUNK):
                yield bytes(view[at : at + BARE_GRPC_CHUNK])

        started = time.time()
        await send(chunks(), timeout=600)
    return {
        "started_at": started,
        "send_returned_s": time.time() - started,
        "sha256": hashlib.sha256(model).hexdigest(),
        "bytes": len(model),
        "rss_before": before,
    }


def _bare_mqtt_client() -> Any:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", 1883)
    return client


def _bare_mqtt_receiver(job: str, mb: int) -> dict[str, object]:
    """paho alone: QoS 1 chunks through the broker, copied into one buffer as they come."""
    import threading

    size = _model_bytes(mb)
    buf = bytearray(size)
    state = {"at": 0, "done_at": 0.0}
    done, subscribed = threading.Event(), threading.Event()
    client = _bare_mqtt_client()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        at = state["at"]
        buf[int(at) : int(at) + len(msg.payload)] = msg.payload
        state["at"] = at + len(msg.payload)
        if state["at"] >= size:
            state["done_at"] = time.time()
            done.set()

    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.subscribe(BARE_TOPIC.format(job=job), qos=1)
    client.loop_start()
    subscribed.wait(30)
    before = _rss()
    print(json.dumps({"ready": True}), flush=True)
    done.wait(600)
    client.loop_stop()
    client.disconnect()
    return {
        "done_at": state["done_at"],
        "sha256": hashlib.sha256(buf).hexdigest(),
        "rss_before": before,
    }


def _bare_mqtt_sender(job: str, mb: int) -> dict[str, object]:
    model = _bare_model(mb)
    before = _rss()
    client = _bare_mqtt_client()
    client.loop_start()
    view = memoryview(model)
    started = time.time()
    infos = [
        client.publish(BARE_TOPIC.format(job=job), bytes(view[at : at + BARE_MQTT_CHUNK]), qos=1)
        for at in range(0, len(model), BARE_MQTT_CHUNK)
    ]
    for info in infos:
        info.wait_for_publish(600)
    returned = time.time() - started
    client.loop_stop()
    client.disconnect()
    return {
        "started_at": started,
        "send_returned_s": returned,
        "sha256": hashlib.sha256(model).hexdigest(),
        "bytes": len(model),
        "rss_before": before,
    }


def _child(args: argparse.Namespace) -> None:
    receiver = args.role == "receiver"
    if args.backend == "grpc-bare":
        make = _bare_grpc_receiver if receiver else _bare_grpc_sender
        out = asyncio.run(make(args.port, args.mb))
    elif args.backend == "mqtt-bare":
        out = (_bare_mqtt_receiver if receiver else _bare_mqtt_sender)(args.job, args.mb)
    elif receiver:
        out = asyncio.run(_receiver(args.job, args.backend, args.port))
    else:
        out = asyncio.run(_sender(args.job, args.backend, args.port, args.mb))
    out["peak_rss"] = _peak_rss()
    print(json.dumps(out), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(role: str, backend: str, job: str, port: int, mb: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "benchmarks.transfer", "--child", role]
    cmd += ["--backend", backend, "--job", job, "--port", str(port), "--mb", str(mb)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def _last_json(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed with exit code {proc.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def run_once(backend: str, mb: int) -> dict[str, Any]:
    job = f"bench-{uuid.uuid4().hex[:10]}"
    port = _free_port()
    receiver = _spawn("receiver", backend, job, port, mb)
    assert receiver.stdout is not None
    ready = receiver.stdout.readline()  # the receiver is serving / subscribed
    if not ready:
        raise RuntimeError("receiver did not start")
    sender = _spawn("sender", backend, job, port, mb)
    s = _last_json(sender, 600)
    r = _last_json(receiver, 600)
    size = int(s["bytes"])
    seconds = float(r["done_at"]) - float(s["started_at"])
    return {
        "backend": backend,
        "model_bytes": size,
        "intact": r["sha256"] == s["sha256"],
        "seconds": round(seconds, 3),
        "mib_per_s": round(size / (1 << 20) / seconds, 1),
        "sender_send_returned_s": round(float(s["send_returned_s"]), 3),
        "sender_rss_before_mib": round(int(s["rss_before"]) / (1 << 20), 1),
        "sender_peak_rss_mib": round(int(s["peak_rss"]) / (1 << 20), 1),
        "sender_peak_x_model": round(int(s["peak_rss"]) / size, 2),
        "receiver_rss_before_mib": round(int(r["rss_before"]) / (1 << 20), 1),
        "receiver_peak_rss_mib": round(int(r["peak_rss"]) / (1 << 20), 1),
        "receiver_peak_x_model": round(int(r["peak_rss"]) / size, 2),
    }


async def _round_trips(backend: str, n: int = 200) -> float:
    """Median ms for a small weights message there and a reply back, within one process."""
    job = f"bench-{uuid.uuid4().hex[:10]}"
    hub = InprocHub(job)
    discovery = MemoryDiscovery()
    settings = ChannelSettings(send_timeout=30)
    sets = [
        await open_channels(
            _config(job, me, peer, backend, 0),
            hub=hub,
            backend=backend,  # type: ignore[arg-type]  # a Backend name
            discovery=discovery,
            settings=settings,
        )
        for me, peer in (("agg", "t1"), ("t1", "agg"))
    ]
    agg, t1 = sets[0]["param"], sets[1]["param"]
    w = {"w": np.ones(650, np.float32)}  # the digits model: 64x10 + 10
    times = []
    try:
        for i in range(n):
            started = time.perf_counter()
            await agg.send("t1", Message("weights", i, weights=w))
            got = await t1.recv("agg", timeout=10)
            await t1.send("agg", Message("update", i, weights=got.weights))
            await agg.recv("t1", timeout=10)
            times.append(time.perf_counter() - started)
    finally:
        for s in sets:
            await s.close()
    return round(float(np.median(times)) * 1000, 3)


BARE = {"grpc": "grpc-bare", "mqtt": "mqtt-bare"}  # each backend's library alone
TARGET_BARE_X = 0.8


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 2.8))
    for i, backend in enumerate(BARE):
        r = results[backend]
        ax.bar(
            i - 0.2,
            r["best"]["mib_per_s"],
            0.4,
            color="tab:blue",
            label="flame" if i == 0 else None,
        )
        ax.bar(
            i + 0.2,
            r["bare"]["best"]["mib_per_s"],
            0.4,
            color="tab:gray",
            label="library alone" if i == 0 else None,
        )
    ax.set_xticks(range(len(BARE)), list(BARE))
    ax.set_ylabel("MiB/s (best run)")
    ax.set_title(f"one {results['model_mb']:,} MB model between two processes", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(mb: int = 1000, repeat: int = 2) -> dict[str, Any]:
    results: dict[str, Any] = {
        "model_mb": mb,
        "small_round_trip_ms": {
            b: asyncio.run(_round_trips(b)) for b in ("inproc", "grpc", "mqtt")
        },
    }
    cells = []
    for backend, bare in BARE.items():
        runs, bare_runs = [], []
        for _ in range(repeat):  # interleaved: a burst of load lands on both alike
            runs.append(run_once(backend, mb))
            bare_runs.append(run_once(bare, mb))
        best = max(runs, key=lambda r: float(r["mib_per_s"]))
        best_bare = max(bare_runs, key=lambda r: float(r["mib_per_s"]))
        peaks = {
            side: max(float(r[f"{side}_peak_x_model"]) for r in runs)
            for side in ("sender", "receiver")
        }
        ratio = float(best["mib_per_s"]) / float(best_bare["mib_per_s"])
        results[backend] = {
            "best": best,
            "runs": runs,
            "bare": {"best": best_bare, "runs": bare_runs},
            "throughput_x_bare": round(ratio, 3),
            "all_intact": all(r["intact"] for r in runs + bare_runs),
            "peak_x_model_worst": peaks,
            "within_target": {
                "throughput": ratio >= TARGET_BARE_X,
                "peak": max(peaks.values()) <= TARGET_PEAK_X,
            },
        }
        cells.append(
            f"{backend} {best['mib_per_s']:.0f} MiB/s = {ratio:.2f}x {backend} alone "
            f"({best_bare['mib_per_s']:.0f} MiB/s), peak RSS sender {peaks['sender']:.2f}x / "
            f"receiver {peaks['receiver']:.2f}x the model"
        )
    png = Path(__file__).parent / "results" / "transfer.png"
    results["table_row"] = (
        f"| transfer | one {mb:,} MB model between two processes: "
        + "; ".join(cells)
        + f" | >= {TARGET_BARE_X}x the library alone, <= {TARGET_PEAK_X:g}x the model |"
    )
    results["plot"] = "results/transfer.png" if plot(results, png) else None
    results["targets"] = {"throughput_x_bare": TARGET_BARE_X, "peak_x_model": TARGET_PEAK_X}
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", dest="role", choices=["sender", "receiver"])
    parser.add_argument("--backend", default="grpc")
    parser.add_argument("--job", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mb", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    ns = parser.parse_args()
    if ns.role:
        _child(ns)
    else:
        from benchmarks.run import save

        started = time.perf_counter()
        save("transfer", main(ns.mb, ns.repeat), time.perf_counter() - started)
