import gc
import hashlib
import json
import mmap
import struct

import numpy as np
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flame.channels.chunking import (
    LAZY_BYTES,
    Chunk,
    Payload,
    Reassembly,
    chunks_of,
    decode_chunk,
    parse_safetensors,
)
from flame.errors import ChannelError
from flame.messages import Message
from flame.tensors import from_bytes, to_bytes
from flame_proto.v1 import data_pb2

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_]

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
arrays = st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
)
weights_st = st.dictionaries(names, arrays, min_size=1, max_size=5)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def _chunks(msg: Message, size: int) -> list[Chunk]:
    return [decode_chunk(c) for c in chunks_of(msg, "agg", size)]


def _joined(payload: Payload) -> bytes:
    return b"".join(bytes(p) for p in payload.parts)


@settings(max_examples=60, deadline=None)
@given(weights_st)
def test_our_payload_is_safetensors_and_theirs_parses_here(w: dict[str, np.ndarray]) -> None:
    ours = _joined(Payload.of(w))
    assert len(ours) == Payload.of(w).total_bytes
    _same(from_bytes(ours), w)  # the safetensors library reads what we stream
    # and we read what it writes (tensors.to_bytes turns 0-d arrays into 1-d ones)
    if all(v.ndim for v in w.values()):
        _same(parse_safetensors(bytearray(to_bytes(w))), w)


@settings(max_examples=40, deadline=None)
@given(weights_st, st.integers(1, 64))
def test_chunks_reassemble_to_the_same_message(w: dict[str, np.ndarray], size: int) -> None:
    msg = Message("update", 3, {"n": 5}, w, sender="t1", job_id="j", channel="c")
    chunks = _chunks(msg, size)
    assert all(len(c.data) <= size for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    whole = Reassembly(chunks[0], 1 << 30)
    for c in chunks[1:]:
        whole.add(c)
    back = whole.message()
    assert (back.kind, back.round, back.meta, back.sender, back.message_id) == (
        "update",
        3,
        {"n": 5},
        "t1",
        msg.message_id,
    )
    assert back.weights is not None
    _same(back.weights, w)


def test_a_message_without_weights_is_one_chunk() -> None:
    chunks = _chunks(Message("done"), 1024)
    assert len(chunks) == 1 and chunks[0].total_bytes == 0
    assert Reassembly(chunks[0], 10).message().weights is None


def test_sending_does_not_copy_contiguous_tensors() -> None:
    big = np.ones(1_000_000, np.float32)
    payload = Payload.of({"big": big})
    view = payload.parts[1]
    big[0] = 2.0  # the payload is a view of the array's memory, not a copy
    assert np.frombuffer(view, np.float32)[0] == 2.0


def test_non_contiguous_and_big_endian_tensors_are_sent_correctly() -> None:
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    w = {"t": base.T, "be": np.arange(5, dtype=">i4")}
    back = from_bytes(_joined(Payload.of(w)))
    np.testing.assert_array_equal(back["t"], base.T)
    np.testing.assert_array_equal(back["be"], np.arange(5))


def test_received_tensors_are_writable_views() -> None:
    w = parse_safetensors(bytearray(to_bytes({"a": np.zeros(3, np.float32)})))
    w["a"] += 1
    np.testing.assert_array_equal(w["a"], np.ones(3, np.float32))


def _raw(header: dict[str, object], data: bytes) -> bytearray:
    head = json.dumps(header).encode()
    return bytearray(struct.pack("<Q", len(head)) + head + data)


@pytest.mark.parametrize(
    "buf",
    [
        bytearray(b"\x01\x02"),
        bytearray(struct.pack("<Q", 1 << 40) + b"{}"),
        _raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
        _raw({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
        _raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 4),
        _raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
        _raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8),
        _raw(
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]},
            },
            b"\0" * 8,
        ),
        bytearray(struct.pack("<Q", 2) + b"[]"),
        bytearray(struct.pack("<Q", 3) + b"{x}"),
    ],
)
def test_malformed_payloads_are_refused(buf: bytearray) -> None:
    with pytest.raises(ChannelError):
        parse_safetensors(buf)


def test_reassembly_refuses_out_of_order_oversized_and_short_streams() -> None:
    w = {"w": np.arange(100, dtype=np.float32)}
    chunks = _chunks(Message("update", weights=w), 100)
    with pytest.raises(ChannelError):
        Reassembly(chunks[1], 1 << 20)  # no header
    with pytest.raises(ChannelError):
        Reassembly(chunks[0], 10)  # over the size limit
    whole = Reassembly(chunks[0], 1 << 20)
    with pytest.raises(ChannelError):
        whole.add(chunks[2])  # skipped a chunk
    whole.add(chunks[1])
    with pytest.raises(ChannelError):
        whole.message()  # incomplete
    for c in chunks[2:]:
        whole.add(c)
    digest = hashlib.sha256(whole.message().weights["w"].tobytes()).digest()  # type: ignore[index]
    assert digest == hashlib.sha256(w["w"].tobytes()).digest()


def test_the_payload_is_hashed_only_for_channels_that_check_signatures() -> None:
    from flame.channels.auth import payload_digest

    w = {"w": np.arange(1000, dtype=np.float32)}
    chunks = _chunks(Message("update", weights=w), 512)
    signed, plain = Reassembly(chunks[0], 1 << 20), Reassembly(chunks[0], 1 << 20, hashed=False)
    for c in chunks[1:]:
        signed.add(c)
        plain.add(c)
    assert signed.digest == payload_digest(w)  # what the sender signed
    assert plain.digest is None  # 1 GB costs no SHA-256 pass where nothing checks it
    assert np.array_equal(plain.message().weights["w"], w["w"])  # type: ignore[index]


@settings(max_examples=40, deadline=None)
@given(weights_st, st.integers(1, 64))
def test_our_chunks_are_the_bytes_protobuf_writes(w: dict[str, np.ndarray], size: int) -> None:
    msg = Message("update", 3, {"n": 5}, w, sender="t1", job_id="j", channel="c")
    payload = _joined(Payload.of(w))
    for index, raw in enumerate(chunks_of(msg, "agg", size)):
        theirs = data_pb2.Chunk.FromString(raw)  # any protobuf library reads them
        assert theirs.index == index
        assert theirs.data == payload[index * size : (index + 1) * size]
        assert raw == theirs.SerializeToString()  # and would have written the same bytes


def _pb_chunk(data: bytes, index: int = 1) -> data_pb2.Chunk:
    header = data_pb2.Envelope(message_id="m", kind="update") if index == 0 else None
    return data_pb2.Chunk(
        message_id="m", index=index, count=3, total_bytes=10, header=header, data=data
    )


@pytest.mark.parametrize("index", [0, 1])
def test_a_received_chunk_keeps_its_data_where_it_arrived(index: int) -> None:
    raw = _pb_chunk(b"0123456789", index).SerializeToString()
    chunk = decode_chunk(raw)
    assert chunk.data.obj is raw and bytes(chunk.data) == b"0123456789"  # a view, not a copy
    assert (chunk.message_id, chunk.index, chunk.count, chunk.total_bytes) == ("m", index, 3, 10)
    assert (chunk.header is not None) == (index == 0)
    assert chunk.header is None or chunk.header.kind == "update"


def test_a_chunk_is_read_whatever_order_its_fields_come_in() -> None:
    data = _pb_chunk(b"abc").SerializeToString()
    rest = _pb_chunk(b"").SerializeToString()
    chunk = decode_chunk(data[len(rest) :] + rest)  # the data field first, then the others
    assert (bytes(chunk.data), chunk.message_id, chunk.index) == (b"abc", "m", 1)
    assert bytes(decode_chunk(rest).data) == b""


@pytest.mark.parametrize(
    "raw",
    [
        _pb_chunk(b"abc").SerializeToString()[:-1],  # cut inside the data
        _pb_chunk(b"abc").SerializeToString() + b"\x32\x01x",  # a second data field
        b"\x0f\x00",  # wire type 7 does not exist
        b"\x10" + b"\xff" * 11,  # a varint that never ends
        b"\x0a\x02\xff\xfe",  # message_id is not UTF-8
    ],
)
def test_a_garbled_chunk_is_refused(raw: bytes) -> None:
    with pytest.raises(ChannelError):
        decode_chunk(raw)


def _announcing(total_bytes: int, data: bytes) -> Chunk:
    return decode_chunk(
        data_pb2.Chunk(
            message_id="m",
            index=0,
            count=2,
            total_bytes=total_bytes,
            header=data_pb2.Envelope(message_id="m"),
            data=data,
        ).SerializeToString()
    )


def test_a_large_message_commits_memory_as_its_data_arrives_not_when_announced() -> None:
    rss = psutil.Process().memory_info
    before = rss().rss
    whole = Reassembly(_announcing(1 << 30, b"x" * 1000), 2 << 30)  # 1 GiB claimed, 1 kB sent
    assert rss().rss - before < 64 << 20
    del whole


def test_tensors_received_into_a_large_buffer_outlive_it_and_are_writable() -> None:
    w = {"a": np.arange(LAZY_BYTES // 4, dtype=np.float32), "b": np.ones(3, np.int64)}
    chunks = _chunks(Message("update", weights=w), 1 << 20)
    whole = Reassembly(chunks[0], 1 << 30)
    for c in chunks[1:]:
        whole.add(c)
    back = whole.message().weights
    del whole, chunks
    gc.collect()
    assert back is not None
    _same(back, w)
    back["a"] += 1
    assert back["a"][-1] == w["a"][-1] + 1


def test_a_message_the_receiver_has_no_memory_for_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_memory(*args: object, **kwargs: object) -> None:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", no_memory)
    with pytest.raises(ChannelError, match="no memory"):
        Reassembly(_announcing(1 << 30, b"x"), 2 << 30)
