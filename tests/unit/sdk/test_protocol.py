"""The typed data-plane messages put exactly the bytes on the wire that main did before
they existed (golden envelopes recorded from the dict-built messages), and read them back."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from flame import protocol as p
from flame.channels.chunking import chunks_of
from flame.errors import RejectedUpdate
from flame.messages import Message

W = {"w": np.arange(4, dtype=np.float32).reshape(2, 2), "extra/c": np.zeros(2, np.float64)}
V3 = {"v": np.arange(3, dtype=np.float64)}
V2 = {"v": np.arange(2, dtype=np.float64)}
TRAINERS = ["trainer-0-abc", "trainer-1-def"]
CASES: dict[str, p.Body] = {
    "update": p.Update(
        round=3,
        weights=W,
        num_samples=60.0,
        eval_samples=20.0,
        metrics={"accuracy": 0.5, "loss": 1.25},
        trainers=1,
        base_round=3,
        duration=0.125,
    ),
    "eval": p.FinalEval(
        round=11,
        num_samples=60.0,
        eval_samples=20.0,
        metrics={"accuracy": 0.9},
        trainers=1,
        base_round=11,
        duration=0.5,
    ),
    "weights": p.Model(round=4, weights=W),
    "done": p.Final(round=11, weights=W),
    "skip": p.Skip(round=4),
    "abort": p.Abort(round=2, reason="quorum lost: 1 of 3", code="quorum-lost"),
    "assign-middle": p.Assign(round=5, trainers=TRAINERS),
    "assign-trainer": p.Assign(round=5, aggregator="middle-aggregator-1-xyz"),
    "round-end": p.RoundEnd(round=5, final=False),
    "round-end-final": p.RoundEnd(round=11, final=True),
    "allreduce": p.Reduce(round=2, step=1, weights=V3),
    "allreduce-gather": p.Reduce(round=2, step=-1, weights=V2),
}
# recorded from main before the typed messages (flame.messages.Message with meta dicts)
GOLDEN: dict[str, tuple[str, str]] = {
    "update": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a32067570646174653803427c7b226e756d5f73616d706c6573223a36302e302c226576616c5f73616d706c"
            "6573223a32302e302c226d657472696373223a7b226163637572616379223a302e352c226c6f7373223a312e"
            "32357d2c22747261696e657273223a312c22626173655f726f756e64223a332c226475726174696f6e223a30"
            "2e3132357d4aa00178000000000000007b2265787472612f63223a7b226474797065223a22463634222c2273"
            "68617065223a5b325d2c22646174615f6f666673657473223a5b302c31365d7d2c2277223a7b226474797065"
            "223a22463332222c227368617065223a5b322c325d2c22646174615f6f666673657473223a5b31362c33325d"
            "7d7d202000000000000000000000000000000000000000000000803f0000004000004040"
        ),
        "db5294fb4a15090be67533fbffdac904306c63b4776e1d4fc0d60a67797c377a",
    ),
    "eval": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a32046576616c380b426f7b226e756d5f73616d706c6573223a36302e302c226576616c5f73616d706c6573"
            "223a32302e302c226d657472696373223a7b226163637572616379223a302e397d2c22747261696e65727322"
            "3a312c22626173655f726f756e64223a31312c226475726174696f6e223a302e357d"
        ),
        "7a6fec2efdcb1d265d4744ebf0e001aa37a402895b5cfbb47ebd9b086df4073e",
    ),
    "weights": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a320777656967687473380442027b7d4aa00178000000000000007b2265787472612f63223a7b2264747970"
            "65223a22463634222c227368617065223a5b325d2c22646174615f6f666673657473223a5b302c31365d7d2c"
            "2277223a7b226474797065223a22463332222c227368617065223a5b322c325d2c22646174615f6f66667365"
            "7473223a5b31362c33325d7d7d202000000000000000000000000000000000000000000000803f0000004000"
            "004040"
        ),
        "cfe94319e7337ff6377a0e8c7a4118dcfb68495873dfe0f30c24617e24eef74f",
    ),
    "done": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a3204646f6e65380b42027b7d4aa00178000000000000007b2265787472612f63223a7b226474797065223a"
            "22463634222c227368617065223a5b325d2c22646174615f6f666673657473223a5b302c31365d7d2c227722"
            "3a7b226474797065223a22463332222c227368617065223a5b322c325d2c22646174615f6f66667365747322"
            "3a5b31362c33325d7d7d202000000000000000000000000000000000000000000000803f0000004000004040"
        ),
        "75ea069a2119f14edb0c03dc7a2c1c2d0c4537972b76a58d90459d932bdf5354",
    ),
    "skip": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a3204736b69703804420e7b22747261696e657273223a307d"
        ),
        "faa0cfde17f264333248921965af156d3eac75d0ad258f680ab7edecddcfdde7",
    ),
    "abort": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a320561626f7274380242357b22726561736f6e223a2271756f72756d206c6f73743a2031206f662033222c"
            "22636f6465223a2271756f72756d2d6c6f7374227d"
        ),
        "08e6660ad83814cb6620ee71b01343116c4f8b13f0b17881cc929d68fa634b79",
    ),
    "assign-middle": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a320661737369676e3805422e7b22747261696e657273223a5b22747261696e65722d302d616263222c2274"
            "7261696e65722d312d646566225d7d"
        ),
        "52a0a3a9a8b11dbd346ba5b6af2b2675a7274f7db281613bfc43b50b85aedd1e",
    ),
    "assign-trainer": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a320661737369676e380542287b2261676772656761746f72223a226d6964646c652d61676772656761746f"
            "722d312d78797a227d"
        ),
        "1ff4455aae78c6b21d620f2c5147762bb051a484e0e20993e731e7313e851b85",
    ),
    "round-end": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a3209726f756e642e656e643805420f7b2266696e616c223a66616c73657d"
        ),
        "b33a38c94782dcf9aa64029a01ef6c7295ab09d0f7a872fd60c335cd57d87ca4",
    ),
    "round-end-final": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a3209726f756e642e656e64380b420e7b2266696e616c223a747275657d"
        ),
        "f5d561a853da80187abf30a0c70f6f42ff1685ec9170c920ec708a71478a5006",
    ),
    "allreduce": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a3209616c6c7265647563653802420a7b2273746570223a317d4a5838000000000000007b2276223a7b2264"
            "74797065223a22463634222c227368617065223a5b335d2c22646174615f6f666673657473223a5b302c3234"
            "5d7d7d200000000000000000000000000000f03f0000000000000040"
        ),
        "0e3796108a1773771819847c3b90748c981e2201650bd47bb6aa783815303a61",
    ),
    "allreduce-gather": (
        (
            "0a206d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d12056a6f622d311a0d70"
            "6172616d2d6368616e6e656c220d747261696e65722d302d6162632a1061676772656761746f722d302d7879"
            "7a3209616c6c7265647563653802420b7b2273746570223a2d317d4a5038000000000000007b2276223a7b22"
            "6474797065223a22463634222c227368617065223a5b325d2c22646174615f6f666673657473223a5b302c31"
            "365d7d7d200000000000000000000000000000f03f"
        ),
        "ba79c7e772818db79ad249c7010deaddfa004ddf1282e065ef8ac50d1045ad29",
    ),
}


def wire(body: p.Body) -> Message:
    return dataclasses.replace(
        body.message(),
        sender="trainer-0-abc",
        job_id="job-1",
        channel="param-channel",
        message_id="m" * 32,
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_message_kind_puts_the_same_bytes_on_the_wire(name: str) -> None:
    msg = wire(CASES[name])
    envelope, chunks_digest = GOLDEN[name]
    assert msg.encode("aggregator-0-xyz").hex() == envelope
    chunks = b"".join(chunks_of(msg, "aggregator-0-xyz", 1 << 20))
    assert hashlib.sha256(chunks).hexdigest() == chunks_digest


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_message_kind_reads_back_as_itself(name: str) -> None:
    body = CASES[name]
    back = type(body).read(Message.decode(wire(body).encode("rx")))
    assert back == body
    if body.weights is not None:
        assert back.weights is not None
        for k, v in body.weights.items():
            np.testing.assert_array_equal(back.weights[k], v)


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({"num_samples": -1}, "num_samples"),
        ({"num_samples": float("nan")}, "num_samples"),
        ({"num_samples": "10"}, "num_samples"),
        ({"metrics": {"acc": float("inf")}}, "metrics"),
        ({"metrics": [1]}, "metrics"),
        ({"trainers": -2}, "trainers"),
        ({"trainers": 1.5}, "trainers"),
    ],
)
def test_a_malformed_update_is_rejected_with_a_reason(meta: dict, reason: str) -> None:
    msg = Message(kind="update", round=1, meta=meta, sender="t1")
    with pytest.raises(RejectedUpdate, match=reason):
        p.Update.read(msg)


def test_a_message_of_another_kind_is_not_read_as_an_update() -> None:
    with pytest.raises(RejectedUpdate, match="expected 'update', got 'skip'"):
        p.Update.read(p.Skip(round=1).message())


def test_an_update_without_base_round_started_from_its_own_round() -> None:
    msg = Message(kind="update", round=7, meta={"num_samples": 3})
    assert p.Update.read(msg).base_round == 7
