"""Ring all-reduce over a peer channel (hybrid and distributed topologies).

Every member calls :func:`allreduce_sum` with a float64 vector of the same length; each gets the
element-wise sum, bit-identical on every member (each chunk is summed once, on one member, then
passed around). Large vectors use the bandwidth-optimal ring (reduce-scatter + all-gather,
2(n-1) steps, each member sends ~2/n of the vector per step); vectors shorter than the group use
a plain all-gather summed in member order.
"""

from __future__ import annotations

import numpy as np

from flame.channels.channel import Channel
from flame.errors import FlameError, PeerTimeout
from flame.protocol import Reduce


async def _exchange(
    chan: Channel,
    send_to: str,
    recv_from: str,
    payload: np.ndarray,
    rnd: int,
    step: int,
    timeout: float,
) -> np.ndarray:
    await chan.send(send_to, Reduce(round=rnd, step=step, weights={"v": payload}).message())
    got = await _receive(chan, recv_from, rnd, timeout)
    if got.step != step:
        raise FlameError(f"all-reduce: step {got.step} from {recv_from}, expected {step}")
    assert got.weights is not None
    return got.weights["v"]


async def _receive(chan: Channel, peer: str, rnd: int, timeout: float) -> Reduce:
    try:
        msg = await chan.recv(peer, timeout=timeout)
    except PeerTimeout as exc:
        raise FlameError(f"all-reduce: no data from {peer} within {timeout:.0f}s") from exc
    got = Reduce.expect(msg)
    if got.round != rnd or got.weights is None or "v" not in got.weights:
        raise FlameError(f"all-reduce: unexpected {msg.kind!r} (round {msg.round}) from {peer}")
    return got


async def allreduce_sum(
    chan: Channel, me: str, members: list[str], vector: np.ndarray, rnd: int, timeout: float
) -> np.ndarray:
    """Sum ``vector`` over ``members`` (sorted task ids, including ``me``)."""
    n = len(members)
    if n == 1:
        return vector.copy()
    i = members.index(me)
    vec = np.asarray(vector, dtype=np.float64)
    if vec.size < n:
        msg = Reduce(round=rnd, step=-1, weights={"v": vec}).message()
        for peer in members:
            if peer != me:
                await chan.send(peer, msg)
        parts: dict[str, np.ndarray] = {me: vec}
        for peer in members:
            if peer == me:
                continue
            got = await _receive(chan, peer, rnd, timeout)
            assert got.weights is not None
            parts[peer] = got.weights["v"]
        total = np.zeros_like(vec)
        for peer in members:
            total += parts[peer]
        return total
    nxt, prv = members[(i + 1) % n], members[(i - 1) % n]
    chunks = [c.copy() for c in np.array_split(vec, n)]
    for s in range(n - 1):  # reduce-scatter: after it, chunk (i+1) % n is complete here
        send_idx, recv_idx = (i - s) % n, (i - s - 1) % n
        part = await _exchange(chan, nxt, prv, chunks[send_idx], rnd, s, timeout)
        chunks[recv_idx] += part
    for s in range(n - 1):  # all-gather the completed chunks around the ring
        send_idx, recv_idx = (i - s + 1) % n, (i - s) % n
        chunks[recv_idx] = await _exchange(
            chan, nxt, prv, chunks[send_idx], rnd, n - 1 + s, timeout
        )
    return np.concatenate(chunks)
