"""The message every channel moves, and its protobuf envelope encoding."""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from flame.errors import ChannelError
from flame.tensors import Weights, from_bytes, to_bytes
from flame_proto.v1 import data_pb2


@dataclass(frozen=True)
class Message:
    """One data-plane message between two tasks of a job.

    ``kind`` says what it is ("weights", "update", "assign", "done", ...), ``round`` which round
    it belongs to, ``meta`` carries small JSON values (sample counts, metrics) and ``weights``
    the tensors, if any.
    """

    kind: str
    round: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    weights: Weights | None = None
    sender: str = ""
    job_id: str = ""
    channel: str = ""
    message_id: str = field(default_factory=lambda: secrets.token_hex(16))  # 128 random bits
    sent_at_ms: int = 0  # set with the signature (flame.channels.auth), 0 when unsigned
    signature: bytes = b""

    def header(self, receiver: str = "") -> data_pb2.Envelope:
        """The envelope of this message without its tensors (chunk 0 of a stream carries it)."""
        return data_pb2.Envelope(
            message_id=self.message_id,
            job_id=self.job_id,
            channel=self.channel,
            sender=self.sender,
            receiver=receiver,
            kind=self.kind,
            round=self.round,
            meta_json=self.meta_json(),
            sent_at_ms=self.sent_at_ms,
            signature=self.signature,
        )

    def with_signature(self, sent_at_ms: int, signature: bytes) -> Message:
        return self.evolve(sent_at_ms=sent_at_ms, signature=signature)

    def evolve(self, **changes: Any) -> Message:
        """A copy with ``changes`` (fields of this class): ``dataclasses.replace`` without its
        generic machinery, on the path of every message (stamping, per-receiver copies)."""
        bad = changes.keys() - _FIELDS
        if bad:
            raise TypeError(f"Message has no field(s) {sorted(bad)}")
        new = object.__new__(type(self))
        state = new.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return new

    def meta_json(self) -> str:
        return json.dumps(self.meta, separators=(",", ":"))

    def to_envelope(self, receiver: str = "") -> data_pb2.Envelope:
        env = self.header(receiver)
        if self.weights is not None:
            env.payload = to_bytes(self.weights)
        return env

    @classmethod
    def from_header(cls, env: data_pb2.Envelope, weights: Weights | None) -> Message:
        """The message an envelope header announces, with its tensors already parsed."""
        try:
            meta = json.loads(env.meta_json) if env.meta_json else {}
        except json.JSONDecodeError as exc:
            raise ChannelError(f"message {env.message_id}: meta is not JSON") from exc
        if not isinstance(meta, dict):
            raise ChannelError(f"message {env.message_id}: meta is not a JSON object")
        return cls(
            kind=env.kind,
            round=env.round,
            meta=meta,
            weights=weights,
            sender=env.sender,
            job_id=env.job_id,
            channel=env.channel,
            message_id=env.message_id,
            sent_at_ms=env.sent_at_ms,
            signature=env.signature,
        )

    @classmethod
    def from_envelope(cls, env: data_pb2.Envelope) -> Message:
        return cls.from_header(env, from_bytes(env.payload) if env.payload else None)

    def encode(self, receiver: str = "") -> bytes:
        return self.to_envelope(receiver).SerializeToString()

    @classmethod
    def decode(cls, data: bytes) -> Message:
        env = data_pb2.Envelope()
        try:
            env.ParseFromString(data)
        except Exception as exc:  # protobuf DecodeError
            raise ChannelError("not a flame envelope") from exc
        return cls.from_envelope(env)


_FIELDS = frozenset(f.name for f in dataclasses.fields(Message))
