"""A resumed top aggregator reports the rounds of its checkpoint again: metrics an earlier
attempt logged but never got out (its reporter's queue died with it) are not lost; the
control plane keeps the first value of each step, so those it had count once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flame
from flame.errors import FlameError
from flame.roles import Aggregator, load_role_class

JOB = Path(__file__).parents[3] / "examples" / "central-numpy"
SPEC = {"rounds": 6}


def test_a_resumed_aggregator_reports_every_round_of_its_checkpoint(tmp_path: Path) -> None:
    base = load_role_class(JOB / "aggregator" / "main.py")
    assert issubclass(base, Aggregator)

    class CrashingAggregator(base):  # type: ignore[misc, valid-type]
        def save(self) -> None:
            super().save()
            if self.round == 3:
                raise FlameError("simulated crash after round 3")

    first: list[dict[str, Any]] = []
    with pytest.raises(FlameError, match="simulated crash"):
        flame.simulate(
            JOB,
            roles={"aggregator": CrashingAggregator},
            overrides=SPEC,
            workdir=tmp_path,
            checkpoint=True,
            on_round=first.append,
        )
    assert [r["round"] for r in first] == [0, 1, 2]
    again: list[dict[str, Any]] = []
    resumed = flame.simulate(
        JOB, overrides=SPEC, workdir=tmp_path, checkpoint=True, on_round=again.append
    )
    assert [r["round"] for r in again] == list(range(7))  # 0-2 from the checkpoint, then 3-6
    assert again[:3] == first  # the same values as the first attempt reported
    assert again == resumed.history
