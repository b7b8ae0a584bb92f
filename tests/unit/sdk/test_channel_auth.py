"""MessageAuth: what a signature binds, and the replay and staleness rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flame.channels.auth import MessageAuth, payload_digest
from flame.errors import ChannelError
from flame.messages import Message
from flame_spec.signing import JobKeys

KEYS = JobKeys(b"s" * 32, "job-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def pair(clock: Clock) -> tuple[MessageAuth, MessageAuth]:
    a_key = Ed25519PrivateKey.from_private_bytes(KEYS.seed("a"))
    b_key = Ed25519PrivateKey.from_private_bytes(KEYS.seed("b"))
    a = MessageAuth(
        "a", a_key, {"b": b_key.public_key()}, max_age=60, reorder_allowance=2, clock=clock
    )
    b = MessageAuth(
        "b", b_key, {"a": a_key.public_key()}, max_age=60, reorder_allowance=2, clock=clock
    )
    return a, b


def msg(**kw: object) -> Message:
    base = Message(
        kind="update",
        round=3,
        meta={"num_samples": 10.0},
        weights={"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
        sender="a",
        job_id="job-1",
        channel="param",
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_a_signed_message_checks_and_every_bound_field_matters() -> None:
    clock = Clock()
    a, b = pair(clock)
    m = msg()
    sealed = a.seal(m, "b", payload_digest(m.weights))
    b.check(sealed, payload_digest(m.weights))
    altered = {
        "meta": dataclasses.replace(sealed, meta={"num_samples": 1e12}),
        "round": dataclasses.replace(sealed, round=4),
        "kind": dataclasses.replace(sealed, kind="done"),
        "job": dataclasses.replace(sealed, job_id="job-2"),
        "id": dataclasses.replace(sealed, message_id="other"),
        "time": sealed.with_signature(sealed.sent_at_ms + 1, sealed.signature),
    }
    for bad in altered.values():
        with pytest.raises(ChannelError, match="bad signature"):
            b.check(bad, payload_digest(m.weights))
    other_weights = {"w": np.zeros((2, 3), dtype=np.float32)}
    with pytest.raises(ChannelError, match="bad signature"):
        b.check(sealed, payload_digest(other_weights))
    # signed for another receiver: a itself cannot take it as if from b
    with pytest.raises(ChannelError, match="no key"):
        a.check(sealed, payload_digest(m.weights))


def test_stale_and_replayed_messages_are_refused() -> None:
    clock = Clock()
    a, b = pair(clock)
    first = a.seal(msg(message_id="1"), "b", payload_digest(msg().weights))
    clock.now += 10
    second = a.seal(msg(message_id="2"), "b", payload_digest(msg().weights))
    b.check(second, payload_digest(msg().weights))
    with pytest.raises(ChannelError, match="replayed"):
        b.check(first, payload_digest(msg().weights))  # 10 s older than one already accepted
    clock.now += 61
    third = a.seal(msg(message_id="3"), "b", payload_digest(msg().weights))
    clock.now += 61
    with pytest.raises(ChannelError, match="stale"):
        b.check(third, payload_digest(msg().weights))


def test_messages_reordered_within_the_allowance_are_taken() -> None:
    clock = Clock()
    a, b = pair(clock)
    early = a.seal(msg(message_id="1"), "b", payload_digest(msg().weights))
    clock.now += 1
    late = a.seal(msg(message_id="2"), "b", payload_digest(msg().weights))
    b.check(late, payload_digest(msg().weights))
    b.check(early, payload_digest(msg().weights))
