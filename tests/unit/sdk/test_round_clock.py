"""Round clocks start when the round can start: a trainer that is slow to join (task start-up
under load) is not a round timeout; a round's deadline counts from when ``min_trainers`` of its
participants have joined."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import flame
from flame.roles import Aggregator, Coordinator, Role, load_role_class

EXAMPLES = Path(__file__).parents[3] / "examples"
JOB = EXAMPLES / "central-numpy"
NumpyTrainer: Any = load_role_class(JOB / "trainer" / "main.py")
NumpyAggregator: Any = load_role_class(JOB / "aggregator" / "main.py")
HP = {"hyperparameters": {"lr": 1.0, "local_steps": 5}}
JOIN_DELAY = 3.0  # seconds: longer than the round timeout below


class SlowToJoin(NumpyTrainer):  # type: ignore[misc]
    """Every trainer takes longer to start than a whole round may last."""

    async def init(self) -> None:  # type: ignore[override]
        await asyncio.sleep(JOIN_DELAY)
        await super().init.run()


ROLES: dict[str, type[Role]] = {
    "trainer": SlowToJoin,
    "aggregator": NumpyAggregator,
    "top-aggregator": NumpyAggregator,
    "middle-aggregator": Aggregator,
    "coordinator": Coordinator,
}


@pytest.mark.parametrize(
    ("job", "backend"),
    [("central-numpy", "inproc"), ("central-numpy", "grpc"), ("hierarchical", "inproc"),
     ("async", "inproc")],
)  # fmt: skip
def test_trainers_joining_after_the_round_timeout_still_complete_round_1(
    job: str, backend: str
) -> None:
    started = time.monotonic()
    with capture_logs() as logs:
        res = flame.simulate(
            EXAMPLES / job,
            roles=ROLES,
            backend=backend,  # type: ignore[arg-type]
            overrides={**HP, "rounds": 3, "round_timeout": 1.0, "min_trainers": 10},
        )
    assert time.monotonic() - started >= JOIN_DELAY
    assert [e for e in logs if e["event"] == "round.timeout"] == []
    assert len(res.history) == 4
    assert all(h["trainers"] >= 1 for h in res.history)
    assert res.history[-1]["accuracy"] > 0.5
    if job != "async":  # the synchronous aggregators say how long round 1 waited for joins
        clocks = [e for e in logs if e["event"] == "round.clock_started"]
        assert clocks[0]["round"] == 1 and clocks[0]["waited"] >= JOIN_DELAY * 0.9
