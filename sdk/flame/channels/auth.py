"""Signed data-plane messages: the receiver knows which task of which job sent each one.

When a job issues keys (the control plane always does; a local run over grpc or mqtt too, see
:mod:`flame_spec.signing`), every message a channel sends carries its sender's Ed25519
signature over the header fields (message id, job, channel, sender, receiver, kind, round,
meta), the time it was sent and the payload's size and SHA-256. The receiving channel checks,
before anything reads the message:

* the signature, with the public key of the peer the message claims to come from: a process
  outside the job, or a task of the job claiming to be another, is refused;
* that it is not stale (sent more than ``max_message_age`` ago) and not a replay (older than a
  message already accepted from that sender, beyond a small reordering allowance); an exact
  redelivery is dropped earlier by its message id.

A refused message is logged with its reason (``message.rejected``) by the transport and never
reaches the role. Neither the network nor an MQTT broker is trusted: the broker only relays
bytes it cannot forge.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from collections.abc import Callable, Mapping

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from flame.channels.chunking import Payload
from flame.config import ChannelMembership, TaskConfig
from flame.errors import ChannelError, ConfigError
from flame.messages import Message

_DOMAIN = b"flame/data-plane/v1"


def payload_digest(weights: Mapping[str, np.ndarray] | None) -> tuple[int, bytes]:
    """Size and SHA-256 of the payload bytes that go on the wire for ``weights``."""
    payload = Payload.of(weights)
    h = hashlib.sha256()
    for part in payload.parts:
        h.update(part)
    return payload.total_bytes, h.digest()


def signed_bytes(msg: Message, receiver: str, digest: tuple[int, bytes]) -> bytes:
    """What a signature covers: every header field but the signature, and the payload."""
    fields = (
        msg.message_id,
        msg.job_id,
        msg.channel,
        msg.sender,
        receiver,
        msg.kind,
        str(msg.round),
        msg.meta_json(),
        str(msg.sent_at_ms),
    )
    out = [_DOMAIN]
    for text in fields:
        raw = text.encode()
        out.append(struct.pack("<I", len(raw)) + raw)
    total, sha = digest
    out.append(struct.pack("<Q", total) + sha)
    return b"".join(out)


def _key_bytes(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{what} is not a base64 Ed25519 key")
    return raw


class MessageAuth:
    """Signs what one channel end sends and checks what it receives."""

    def __init__(
        self,
        me: str,
        private_key: Ed25519PrivateKey,
        peer_keys: Mapping[str, Ed25519PublicKey],
        *,
        max_age: float,
        reorder_allowance: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.me = me
        self._key = private_key
        self._peers = dict(peer_keys)
        self._max_age_ms = int(max_age * 1000)
        self._reorder_ms = int(reorder_allowance * 1000)
        self._clock = clock
        self._newest: dict[str, int] = {}  # sender -> newest sent_at_ms accepted

    @classmethod
    def of(
        cls,
        config: TaskConfig,
        membership: ChannelMembership,
        *,
        max_age: float,
        reorder_allowance: float,
    ) -> MessageAuth | None:
        """The channel's signer/checker, or None when the job issued no keys."""
        if config.signing.private_key is None:
            return None
        mine = Ed25519PrivateKey.from_private_bytes(
            _key_bytes(config.signing.private_key, "this task's signing key")
        )
        peers: dict[str, Ed25519PublicKey] = {}
        for p in membership.peers:
            if not p.public_key:
                raise ConfigError(
                    f"peer {p.task_id} on channel {membership.name} has no public key, "
                    "though this task signs its messages"
                )
            peers[p.task_id] = Ed25519PublicKey.from_public_bytes(
                _key_bytes(p.public_key, f"the public key of {p.task_id}")
            )
        return cls(
            config.task_id, mine, peers, max_age=max_age, reorder_allowance=reorder_allowance
        )

    def seal(self, msg: Message, receiver: str, digest: tuple[int, bytes]) -> Message:
        """``msg`` for ``receiver``, stamped with the time and signed."""
        stamped = msg.with_signature(int(self._clock() * 1000), b"")
        signature = self._key.sign(signed_bytes(stamped, receiver, digest))
        return stamped.with_signature(stamped.sent_at_ms, signature)

    def check(self, msg: Message, digest: tuple[int, bytes]) -> None:
        """Raise :class:`ChannelError` with the reason unless ``msg`` is a fresh message that
        its claimed sender signed for this task."""
        if not msg.signature:
            raise ChannelError(f"unsigned message claiming to be from {msg.sender!r}")
        key = self._peers.get(msg.sender)
        if key is None:
            raise ChannelError(f"no key for {msg.sender!r}: not a peer on this channel")
        try:
            key.verify(msg.signature, signed_bytes(msg, self.me, digest))
        except InvalidSignature:
            raise ChannelError(
                f"bad signature: not signed by {msg.sender!r}, or altered on the way"
            ) from None
        now_ms = int(self._clock() * 1000)
        if msg.sent_at_ms < now_ms - self._max_age_ms:
            age = (now_ms - msg.sent_at_ms) / 1000
            raise ChannelError(f"stale message from {msg.sender!r}: sent {age:.0f} s ago")
        newest = self._newest.get(msg.sender, 0)
        if msg.sent_at_ms < newest - self._reorder_ms:
            raise ChannelError(
                f"replayed message from {msg.sender!r}: older than one already accepted"
            )
        self._newest[msg.sender] = max(newest, msg.sent_at_ms)
