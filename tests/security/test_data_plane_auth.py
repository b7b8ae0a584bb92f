"""Signed data-plane messages: forged, impersonated, replayed and stale updates never reach the
aggregator, over grpc and over mqtt (whose broker is not trusted), and the rounds go on."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import flame
from flame.channels.auth import payload_digest, signed_bytes
from flame.errors import ChannelError
from flame.messages import Message
from flame.protocol import Update
from flame.roles import load_role_class
from flame_spec import task_id

EXAMPLES = Path(__file__).parents[2] / "examples"
JOB = EXAMPLES / "central-numpy"
Trainer: Any = load_role_class(JOB / "trainer" / "main.py")
Aggregator: Any = load_role_class(JOB / "aggregator" / "main.py")
HP = {"hyperparameters": {"lr": 1.0, "local_steps": 5}, "rounds": 4}
ATTACK_ROUND = 2


class Attacker(Trainer):  # type: ignore[misc]
    """Trainer 1 plays by the rules, and in round 2 also sends the aggregator updates that
    claim to come from trainer 0 (unsigned, as an outsider would; signed with its own key, as
    a job member would) and a stale one of its own."""

    sent: dict[str, int] = {}

    async def upload(self) -> None:
        chan = self.channels["param-channel"]
        if self.config.index == 1 and self.round == ATTACK_ROUND:
            await self._attack(chan)
        await super().upload.run()

    async def _attack(self, chan: Any) -> None:
        (agg,) = chan.peers()
        victim = task_id(self.config.job_id, "trainer", 0)  # ids follow from the job id
        update = Update(
            round=self.round,
            weights=self._out,
            num_samples=1.0,
            eval_samples=1.0,
            metrics={"loss": 0.0},
            trainers=1,
            base_round=self.round,
            duration=0.0,
        ).message()

        def as_(sender: str) -> Message:
            return dataclasses.replace(
                update,
                sender=sender,
                channel=chan.name,
                job_id=self.config.job_id,
                message_id=uuid.uuid4().hex,
            )

        assert chan.auth is not None, "the job issued no keys"
        forged = {
            "unsigned": as_(victim),
            "own-key": chan.auth.seal(as_(victim), agg, _digest(update)),
            "stale": _stale(chan, as_(self.config.task_id), agg),
        }
        for name, msg in forged.items():
            await _send_raw(chan, agg, msg)
            Attacker.sent[name] = Attacker.sent.get(name, 0) + 1


def _digest(msg: Message) -> tuple[int, bytes]:
    return payload_digest(msg.weights)


def _stale(chan: Any, msg: Message, receiver: str) -> Message:
    sealed = chan.auth.seal(msg, receiver, _digest(msg))
    old = sealed.with_signature(sealed.sent_at_ms - 2 * 3600 * 1000, b"")
    signature = chan.auth._key.sign(_signed(old, receiver))
    return old.with_signature(old.sent_at_ms, signature)


def _signed(msg: Message, receiver: str) -> bytes:
    return signed_bytes(msg, receiver, _digest(msg))


async def _send_raw(chan: Any, peer: str, msg: Message) -> None:
    """Straight to the transport, past the channel's own stamping and signing."""
    with contextlib.suppress(ChannelError):  # grpc tells the sender; mqtt's broker took it
        await chan.transport.send(chan.name, peer, msg)


@pytest.mark.parametrize("backend", ["grpc", "mqtt"])
def test_forged_impersonated_and_stale_updates_are_refused_and_the_rounds_go_on(
    backend: str,
) -> None:
    Attacker.sent = {}
    with capture_logs() as logs:
        res = flame.simulate(
            JOB,
            roles={"trainer": Attacker, "aggregator": Aggregator},
            backend=backend,  # type: ignore[arg-type]
            overrides=HP,
        )
    assert Attacker.sent == {"unsigned": 1, "own-key": 1, "stale": 1}
    rejected = [e for e in logs if e["event"] == "message.rejected"]
    reasons = sorted(e["reason"].split(":")[0].split(" ")[0] for e in rejected)
    assert reasons == ["bad", "stale", "unsigned"], rejected
    # nothing forged was counted: every round has the ten real updates, no update.rejected
    assert [h["trainers"] for h in res.history][:4] == [10, 10, 10, 10]
    assert not [e for e in logs if e["event"] == "update.rejected"]
