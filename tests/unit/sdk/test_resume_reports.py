"""A resumed top aggregator reports the rounds of its checkpoint again: metrics an earlier
attempt logged but never got out (its reporter's queue died with it) are not lost; the
control plane keeps the first value of each step, so those it had count once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flame
from flame.errors import FlameError
from flame.roles import Aggregator, load_role_class

JOB = Path(__file__).parents[3] / "examples" / "central-numpy"
SPEC = {"rounds": 6}


def _base() -> type[Aggregator]:
    base = load_role_class(JOB / "aggregator" / "main.py")
    assert issubclass(base, Aggregator)
    return base


def _crash(tmp_path: Path, after: Callable[[Aggregator], bool]) -> list[dict[str, Any]]:
    """Run the job with checkpoints until the aggregator crashes right after a save for which
    ``after`` holds; the rounds it reported."""

    class CrashingAggregator(_base()):  # type: ignore[misc]
        def save(self) -> None:
            super().save()
            if after(self):
                raise FlameError("simulated crash")

    reported: list[dict[str, Any]] = []
    with pytest.raises(FlameError, match="simulated crash"):
        flame.simulate(
            JOB,
            roles={"aggregator": CrashingAggregator},
            overrides=SPEC,
            workdir=tmp_path,
            checkpoint=True,
            on_round=reported.append,
        )
    return reported


def test_a_resumed_aggregator_reports_every_round_of_its_checkpoint(tmp_path: Path) -> None:
    first = _crash(tmp_path, lambda agg: agg.round == 3)
    assert [r["round"] for r in first] == [0, 1, 2]
    again: list[dict[str, Any]] = []
    resumed = flame.simulate(
        JOB, overrides=SPEC, workdir=tmp_path, checkpoint=True, on_round=again.append
    )
    assert [r["round"] for r in again] == list(range(7))  # 0-2 from the checkpoint, then 3-6
    assert again[:3] == first  # the same values as the first attempt reported
    assert again == resumed.history


def test_a_restart_after_the_final_round_reports_it_and_does_not_run_it_again(
    tmp_path: Path,
) -> None:
    """Killed after the final evaluation (its trainers got their final model and ended): the
    restarted aggregator re-reports every step, the last one included, and only finishes. Seen
    on the stack: it ran the final round again, waited 60 s for trainers that had gone, and
    the job's last accuracy was never reported."""
    first = _crash(tmp_path, lambda agg: agg.final)
    assert [r["round"] for r in first] == list(range(7))

    class FinishingAggregator(_base()):  # type: ignore[misc]
        rounds_run = 0

        async def fetch(self) -> None:  # type: ignore[override]
            FinishingAggregator.rounds_run += 1
            raise FlameError("the restarted aggregator started another round")

    again: list[dict[str, Any]] = []
    resumed = flame.simulate(
        JOB,
        roles={"aggregator": FinishingAggregator},
        overrides={**SPEC, "max_run_time": 5},  # its trainers wait for nothing
        workdir=tmp_path,
        checkpoint=True,
        on_round=again.append,
    )
    assert FinishingAggregator.rounds_run == 0
    assert again == first == resumed.history
