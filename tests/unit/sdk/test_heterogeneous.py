"""Heterogeneous participants: per-round per-trainer instructions, declining a round, partial
work, and rounds nobody finishes (issue 23, points 1-3). NumPy digits, one process."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from structlog.testing import capture_logs

import flame
from flame.errors import ConfigError
from flame.instructions import Instructions
from flame.messages import Message
from flame.protocol import Decline, Model, Update
from flame.roles import Aggregator, Coordinator, Role, load_role_class
from flame.roles.aggregator import Received

EXAMPLES = Path(__file__).parents[3] / "examples"
JOB = EXAMPLES / "central-numpy"
NumpyTrainer: Any = load_role_class(JOB / "trainer" / "main.py")
NumpyAggregator: Any = load_role_class(JOB / "aggregator" / "main.py")
HP = {"hyperparameters": {"lr": 1.0, "local_steps": 5}}


def roles(trainer: type[Role], aggregator: type[Role] = NumpyAggregator) -> dict[str, type[Role]]:
    return {
        "trainer": trainer,
        "aggregator": aggregator,
        "top-aggregator": aggregator,
        "middle-aggregator": Aggregator,
        "coordinator": Coordinator,
    }


class Trainer3Declines(NumpyTrainer):  # type: ignore[misc]
    def train(self) -> None:
        if self.config.index == 3:
            self.decline("battery low")
        super().train()


def test_a_declining_trainer_costs_its_round_no_timeout() -> None:
    started = time.monotonic()
    with capture_logs() as logs:
        res = flame.simulate(
            JOB,
            roles=roles(Trainer3Declines),
            overrides={**HP, "rounds": 4, "round_timeout": 60.0, "min_trainers": 10},
        )
    seconds = time.monotonic() - started
    assert seconds < 30  # one timeout would be 60 s
    assert not [e for e in logs if e["event"] == "round.timeout"]
    declines = [e for e in logs if e["event"] == "round.declined"]
    assert len(declines) == 4 and all(e["reason"] == "battery low" for e in declines)
    assert all(e["peer"].startswith("trainer-3-") for e in declines)
    rounds = res.history[:-1]
    assert [h["declined"] for h in rounds] == [1.0] * 4
    assert [h["trainers"] for h in rounds] == [9.0] * 4
    assert max(h["round_time"] for h in rounds) < 10


class AllDeclineRound2(NumpyTrainer):  # type: ignore[misc]
    received: ClassVar[dict[tuple[int, int], dict[str, np.ndarray]]] = {}

    def train(self) -> None:
        self.received[(self.config.index, self.round)] = dict(self.global_weights)
        if self.round == 2:
            self.decline("maintenance window")
        super().train()


def test_a_round_every_trainer_declines_keeps_the_model_and_the_job_goes_on() -> None:
    AllDeclineRound2.received.clear()
    with capture_logs() as logs:
        res = flame.simulate(
            JOB,
            roles=roles(AllDeclineRound2),
            overrides={**HP, "rounds": 4, "round_timeout": 60.0, "min_trainers": 10},
        )
    assert len(res.history) == 5
    assert res.history[1]["declined"] == 10.0 and res.history[1]["trainers"] == 0.0
    no_update = [e for e in logs if e["event"] == "round.no_update"]
    assert len(no_update) == 1 and no_update[0]["round"] == 2
    assert "10 declined" in no_update[0]["reason"]
    got = AllDeclineRound2.received
    for name in ("w", "b"):
        np.testing.assert_array_equal(got[(0, 3)][name], got[(0, 2)][name])  # unchanged
        assert not np.array_equal(got[(0, 2)][name], got[(0, 1)][name])  # others did change
    assert res.history[-1]["accuracy"] > 0.8


class InstructingAggregator(NumpyAggregator):  # type: ignore[misc]
    def instruct(self, participants: list[str]) -> dict[str, Instructions]:
        return {
            p: Instructions(local_steps=i + self.round, lr=0.5, params={"for": p})
            for i, p in enumerate(sorted(participants))
        }


class RecordingTrainer(NumpyTrainer):  # type: ignore[misc]
    seen: ClassVar[list[tuple[str, int, Instructions]]] = []

    def train(self) -> None:
        self.seen.append((self.config.task_id, self.round, self.instructions))
        super().train()


@pytest.mark.parametrize("backend", ["inproc", "grpc", "mqtt"])
def test_instructions_reach_exactly_the_trainer_they_were_meant_for(backend: str) -> None:
    RecordingTrainer.seen.clear()
    flame.simulate(
        JOB,
        roles=roles(RecordingTrainer, InstructingAggregator),
        backend=backend,  # type: ignore[arg-type]
        overrides={**HP, "rounds": 2},
        job_id=f"hetero-{uuid.uuid4().hex[:12]}",
    )
    seen = RecordingTrainer.seen
    assert len(seen) == 20
    ids = sorted({t for t, _, _ in seen})
    for task_id, rnd, ins in seen:
        assert ins.params == {"for": task_id}
        assert ins.local_steps == ids.index(task_id) + rnd
        assert ins.lr == 0.5 and ins.deadline is None


def test_without_instructions_a_trainer_sees_an_empty_set() -> None:
    RecordingTrainer.seen.clear()
    flame.simulate(JOB, roles=roles(RecordingTrainer), overrides={**HP, "rounds": 1})
    assert len(RecordingTrainer.seen) == 10
    assert all(ins == Instructions() and ins.empty for _, _, ins in RecordingTrainer.seen)


class WrongInstructions(NumpyAggregator):  # type: ignore[misc]
    def instruct(self, participants: list[str]) -> dict[str, Instructions]:
        return {"trainer-99": Instructions(local_epochs=1)}


def test_instructions_for_a_trainer_not_in_the_round_are_refused() -> None:
    with pytest.raises(ConfigError, match="'trainer-99', which is not a participant"):
        flame.simulate(
            JOB,
            roles=roles(NumpyTrainer, WrongInstructions),
            overrides={**HP, "rounds": 1, "round_timeout": 5.0},
        )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"lr": -1.0}, "lr -1.0 is not a positive number"),
        ({"local_epochs": 1.5}, "local_epochs 1.5"),
        ({"deadline": float("inf")}, "deadline inf"),
        ({"params": {"x": [1, 2]}}, "param 'x'"),
        ({"params": {f"k{i}": i for i in range(40)}}, "at most 32"),
    ],
)
def test_bad_instructions_get_a_clear_error(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Instructions(**fields)


def test_instructions_round_trip_and_a_malformed_set_is_rejected() -> None:
    ins = Instructions(local_epochs=3, deadline=2.5, params={"straggler": True})
    msg = Model(round=2, weights={}, instructions=ins).message()
    assert msg.meta == {
        "instructions": {"local_epochs": 3, "deadline": 2.5, "params": {"straggler": True}}
    }
    assert Model.read(Message.decode(msg.encode("t"))).instructions == ins
    bad = Message(kind="weights", round=2, meta={"instructions": {"lr": "fast"}})
    with pytest.raises(flame.RejectedUpdate, match="lr 'fast'"):
        Model.read(bad)


def test_partial_work_weights_an_update_by_the_share_done() -> None:
    w = {"w": np.ones(2, np.float32)}
    full = Update(round=1, weights=w, num_samples=100.0)
    part = Update(round=1, weights=w, num_samples=100.0, steps=2.0, planned_steps=8.0)
    assert Received("a", full, w, {}).contribution().num_samples == 100
    c = Received("b", part, w, {}).contribution()
    assert c.num_samples == 25 and c.meta["steps"] == 2.0 and c.meta["samples"] == 100.0
    decoded = Update.read(Message.decode(part.message().encode("agg")))
    assert (decoded.steps, decoded.planned_steps, decoded.work) == (2.0, 8.0, 0.25)
    assert Decline.read(Decline(round=1, reason="busy").message()).reason == "busy"


class Stragglers(NumpyTrainer):  # type: ignore[misc]
    """Odd trainers do 1 of 5 local steps."""

    def train(self) -> None:
        if self.config.index % 2:
            self.hyperparameters["local_steps"] = 1  # shared dict: restored below
            try:
                super().train()
            finally:
                self.hyperparameters["local_steps"] = 5
            self.report_work(1, 5)
        else:
            super().train()


def test_partial_work_is_counted_in_the_rounds_metrics() -> None:
    res = flame.simulate(JOB, roles=roles(Stragglers), overrides={**HP, "rounds": 3})
    assert [h["partial"] for h in res.history[:-1]] == [5.0, 5.0, 5.0]
    assert [h["trainers"] for h in res.history[:-1]] == [10.0, 10.0, 10.0]


def test_the_async_aggregator_counts_a_decline_at_once() -> None:
    started = time.monotonic()
    with capture_logs() as logs:
        res = flame.simulate(
            EXAMPLES / "async",
            roles=roles(Trainer3Declines),
            overrides={**HP, "rounds": 4, "round_timeout": 60.0},
        )
    assert time.monotonic() - started < 30
    assert not [e for e in logs if e["event"] in ("round.timeout", "update.rejected")]
    assert any(e["event"] == "round.declined" for e in logs)
    assert len(res.history) == 5
