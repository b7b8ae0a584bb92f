"""Streaming a message as :class:`data_pb2.Chunk` s without holding extra copies of its tensors.

The payload is safetensors bytes (the same format :func:`flame.tensors.to_bytes` writes and
:func:`flame.tensors.from_bytes` reads), but it is never built as one blob:

* the sender writes the safetensors header and then slices each array's own memory into chunks
  (:func:`chunks_of`), so sending costs one chunk of extra memory, not a copy of the model;
  each serialised chunk is written in one copy from the arrays (protobuf would copy the data
  into a ``Chunk`` and again when serialising it);
* the receiver reads a serialised chunk's fields but leaves its data where it arrived
  (:func:`decode_chunk`: a view, not protobuf's two copies), writes it into one buffer of the
  announced size (:class:`Reassembly`) and parses the tensors as writable views into that
  buffer (:func:`parse_safetensors`): one copy in total.

Chunk 0 carries the envelope header (an ``Envelope`` with an empty payload) and ``count``,
``total_bytes``; every chunk carries the next part of the payload, in order. On the wire a
chunk is an ordinary serialised ``data_pb2.Chunk`` (any protobuf library reads and writes it).
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from flame.errors import ChannelError
from flame.messages import Message
from flame.tensors import WIRE_DTYPES, Weights, safetensors_parts, wire_code
from flame_proto.v1 import data_pb2

_DTYPES = WIRE_DTYPES
MAX_HEADER_BYTES = 100_000_000  # the limit safetensors itself enforces


def check_sendable(weights: Mapping[str, np.ndarray] | None) -> None:
    """Raise :class:`ChannelError` unless every tensor has a dtype the wire format carries."""
    for arr in (weights or {}).values():
        dtype = np.asarray(arr).dtype
        if wire_code(dtype) is None:
            raise ChannelError(f"cannot send tensors of dtype {dtype}")


@dataclass(frozen=True)
class Payload:
    """A message's safetensors payload as a list of buffers, concatenated on the wire."""

    parts: tuple[memoryview, ...]
    total_bytes: int

    @classmethod
    def of(cls, weights: Mapping[str, np.ndarray] | None) -> Payload:
        if not weights:
            return cls((), 0)
        check_sendable(weights)
        return cls(*safetensors_parts(weights))

    def pieces(self, size: int) -> Iterator[list[memoryview]]:
        """The payload in pieces of exactly ``size`` bytes (the last may be shorter), each as
        views of the parts it spans (nothing is copied)."""
        pending: list[memoryview] = []
        pending_len = 0
        for part in self.parts:
            pos = 0
            while pos < len(part):
                take = min(size - pending_len, len(part) - pos)
                pending.append(part[pos : pos + take])
                pending_len += take
                pos += take
                if pending_len == size:
                    yield pending
                    pending, pending_len = [], 0
        if pending_len:
            yield pending


def chunk_count(total_bytes: int, chunk_bytes: int) -> int:
    """How many chunks :func:`chunks_of` makes of a payload of ``total_bytes``."""
    return max(1, math.ceil(total_bytes / chunk_bytes))


_DATA = 6  # data_pb2.Chunk's data field: the last, so protobuf serialises it last too
_DATA_TAG = bytes([_DATA << 3 | 2])  # its key (length-delimited)


def chunks_of(
    msg: Message, receiver: str, chunk_bytes: int, payload: Payload | None = None
) -> Iterator[bytes]:
    """``msg`` for ``receiver`` as serialised ``data_pb2.Chunk`` s of at most ``chunk_bytes``
    payload bytes each: the bytes protobuf would write, but built in one copy of the data.

    ``payload`` is ``Payload.of(msg.weights)`` when the caller has built it already (building
    it first also surfaces an unsendable dtype before anything goes on the wire).
    """
    if payload is None:
        payload = Payload.of(msg.weights)
    count = chunk_count(payload.total_bytes, chunk_bytes)
    header = msg.header(receiver)
    pieces = payload.pieces(chunk_bytes)
    for index in range(count):
        fields = data_pb2.Chunk(
            message_id=msg.message_id,
            index=index,
            count=count,
            total_bytes=payload.total_bytes,
            header=header if index == 0 else None,
        ).SerializeToString()
        data = next(pieces, [])
        size = sum(len(p) for p in data)
        yield b"".join((fields, _DATA_TAG, _varint(size), *data)) if size else fields


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A received ``data_pb2.Chunk``: its fields, and its data as a view into the bytes it
    arrived in. ``header`` is None unless the chunk carries one (chunk 0)."""

    message_id: str
    index: int
    count: int
    total_bytes: int
    header: data_pb2.Envelope | None
    data: memoryview


def decode_chunk(raw: bytes) -> Chunk:
    """Parse a serialised ``data_pb2.Chunk`` without copying its data out of ``raw``.

    The data field is found by walking the protobuf framing; protobuf parses the rest (a few
    small fields). A chunk with more than one data field is refused (no sender writes one).
    """
    view = memoryview(raw)
    span = _data_span(view)
    if span is None:
        rest, data = raw, view[:0]
    else:
        field, begin, end = span
        rest, data = bytes(view[:field]) + bytes(view[end:]), view[begin:end]
    try:
        fields = data_pb2.Chunk.FromString(rest)
    except Exception as exc:  # protobuf DecodeError
        raise ChannelError("not a chunk") from exc
    return Chunk(
        fields.message_id,
        fields.index,
        fields.count,
        fields.total_bytes,
        fields.header if fields.HasField("header") else None,
        data,
    )


def _data_span(buf: memoryview) -> tuple[int, int, int] | None:
    """Where the data field sits in a serialised chunk: (field start, data start, data end)."""
    span = None
    pos, n = 0, len(buf)
    while pos < n:
        start = pos
        key, pos = _read_varint(buf, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _read_varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if key >> 3 == _DATA:
                if span is not None:
                    raise ChannelError("not a chunk: two data fields")
                span = (start, pos, pos + length)
            pos += length
        else:
            raise ChannelError("not a chunk: unknown wire type")
    if pos != n:
        raise ChannelError("not a chunk: truncated")
    return span


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while shift < 64:
        if pos >= len(buf):
            raise ChannelError("not a chunk: truncated")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ChannelError("not a chunk: bad varint")


LAZY_BYTES = 4 << 20  # payloads from this size on are received into a map (see _zeroed)


def _zeroed(size: int) -> bytearray | mmap.mmap:
    """``size`` zero bytes to receive a payload into. From :data:`LAZY_BYTES` on, a private
    anonymous map: its memory is committed page by page as the payload is written into it,
    whereas ``bytearray`` zeroes (so commits) all of it when the first chunk announces the size.
    A peer that announces a large message and then stalls has the receiver commit only what it
    sent, and the page faults of a large model (≈ 0.4 s per GB on a VM) are spread over its
    transfer instead of holding up the event loop at its first chunk."""
    if size < LAZY_BYTES:
        return bytearray(size)
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class Reassembly:
    """Collects the chunks of one message, in order, into one preallocated buffer; ``hashed``
    (a channel that checks signatures) also takes the payload's SHA-256 on the way."""

    def __init__(self, first: Chunk, max_bytes: int, *, hashed: bool = True) -> None:
        if first.index != 0 or first.header is None:
            raise ChannelError(f"message {first.message_id}: first chunk has no header")
        if first.count < 1 or first.total_bytes < 0:
            raise ChannelError(f"message {first.message_id}: bad chunk count or size")
        if first.total_bytes > max_bytes:
            raise ChannelError(
                f"message {first.message_id}: {first.total_bytes} bytes exceeds the "
                f"{max_bytes}-byte limit"
            )
        self.message_id = first.message_id
        self.header = first.header
        self.count = first.count
        self.total_bytes = first.total_bytes
        try:
            self.buffer = _zeroed(first.total_bytes)
        except (OSError, MemoryError) as exc:
            raise ChannelError(f"message {first.message_id}: no memory for it") from exc
        self._view = memoryview(self.buffer)
        self.next_index = 0
        self.filled = 0
        self._sha = hashlib.sha256() if hashed else None
        self.add(first)

    @property
    def complete(self) -> bool:
        return self.next_index == self.count

    def add(self, chunk: Chunk) -> None:
        if chunk.message_id != self.message_id:
            raise ChannelError(f"chunk of {chunk.message_id} inside message {self.message_id}")
        if chunk.index != self.next_index:
            raise ChannelError(
                f"message {self.message_id}: chunk {chunk.index} where {self.next_index} expected"
            )
        data = chunk.data
        end = self.filled + len(data)
        if end > self.total_bytes:
            raise ChannelError(f"message {self.message_id}: more data than announced")
        self._view[self.filled : end] = data
        if self._sha is not None:
            self._sha.update(data)
        self.filled = end
        self.next_index += 1
        if self.complete and self.filled != self.total_bytes:
            raise ChannelError(f"message {self.message_id}: payload is short")

    @property
    def digest(self) -> tuple[int, bytes] | None:
        """Size and SHA-256 of the payload received (what a signature covers), if hashed."""
        return None if self._sha is None else (self.total_bytes, self._sha.digest())

    def message(self) -> Message:
        if not self.complete:
            raise ChannelError(f"message {self.message_id} is incomplete")
        weights = parse_safetensors(self.buffer) if self.total_bytes else None
        return Message.from_header(self.header, weights)


def parse_safetensors(buf: bytearray | mmap.mmap) -> Weights:
    """Parse safetensors bytes into writable arrays that are views into ``buf`` (no copy).

    Checks what safetensors' own loader checks: the header is a JSON object of known dtypes,
    each tensor's byte range matches its shape and the ranges tile the data exactly.
    """
    if len(buf) < 8:
        raise ChannelError("payload is not safetensors: too short")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > MAX_HEADER_BYTES or 8 + n > len(buf):
        raise ChannelError("payload is not safetensors: bad header length")
    try:
        header = json.loads(bytes(buf[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChannelError("payload is not safetensors: header is not JSON") from exc
    if not isinstance(header, dict):
        raise ChannelError("payload is not safetensors: header is not an object")
    header.pop("__metadata__", None)
    data = memoryview(buf)[8 + n :]
    spans: list[tuple[int, int, str]] = []
    out: Weights = {}
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ChannelError(f"payload is not safetensors: bad entry {name!r}") from exc
        if any(d < 0 for d in shape) or not 0 <= begin <= end <= len(data):
            raise ChannelError(f"payload is not safetensors: bad entry {name!r}")
        if math.prod(shape) * dtype.itemsize != end - begin:
            raise ChannelError(f"payload is not safetensors: {name!r} size does not match shape")
        spans.append((begin, end, name))
        out[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape)
    pos = 0
    for begin, end, name in sorted(spans):
        if begin != pos:
            raise ChannelError(f"payload is not safetensors: {name!r} overlaps or leaves a gap")
        pos = end
    if pos != len(data):
        raise ChannelError("payload is not safetensors: trailing bytes")
    return out
