import numpy as np
import pytest

from flame.errors import ChannelError, RejectedUpdate
from flame.messages import Message
from flame.tensors import check_update, from_bytes, to_bytes


def test_message_round_trips_through_the_envelope() -> None:
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float64)}
    msg = Message("update", 7, {"samples": 12}, weights, sender="t1", job_id="j", channel="c")
    back = Message.decode(msg.encode(receiver="agg"))
    assert (back.kind, back.round, back.meta, back.sender) == ("update", 7, {"samples": 12}, "t1")
    assert back.weights is not None
    assert back.weights.keys() == weights.keys()
    for k, v in weights.items():
        assert back.weights[k].dtype == v.dtype
        np.testing.assert_array_equal(back.weights[k], v)


def test_garbage_is_not_a_message() -> None:
    with pytest.raises(ChannelError):
        Message.decode(b"\xff\xfe not protobuf")


def test_payload_must_be_safetensors() -> None:
    with pytest.raises(RejectedUpdate):
        from_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        ({"w": np.full((2, 2), np.nan, np.float32)}, "non-finite"),
        ({"w": np.ones((3, 2), np.float32)}, "shape"),
        ({"w": np.ones((2, 2), np.float64)}, "dtype"),
        ({"v": np.ones((2, 2), np.float32)}, "names"),
    ],
)
def test_bad_updates_are_rejected_with_a_reason(update: dict, reason: str) -> None:
    ref = {"w": np.zeros((2, 2), np.float32)}
    with pytest.raises(RejectedUpdate, match=reason):
        check_update(update, ref, sender="t9")


def test_good_update_passes_and_survives_bytes() -> None:
    ref = {"w": np.zeros((2, 2), np.float32)}
    check_update(from_bytes(to_bytes({"w": np.ones((2, 2), np.float32)})), ref)


def test_zero_dimensional_tensors_keep_their_shape() -> None:
    back = from_bytes(to_bytes({"step": np.array(3.0, np.float32), "w": np.ones((2, 3)).T}))
    assert back["step"].shape == () and float(back["step"]) == 3.0
    np.testing.assert_array_equal(back["w"], np.ones((3, 2)))
