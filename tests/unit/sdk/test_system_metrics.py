"""System metrics: each sampler measures the CPU over its own intervals."""

from __future__ import annotations

from collections import namedtuple

import pytest

from flame import system_metrics
from flame.system_metrics import SystemSampler, busy_percentage

Times = namedtuple("Times", "user system idle iowait guest guest_nice")


def test_busy_share_leaves_idle_and_iowait_out_and_guest_time_counted_once() -> None:
    before = Times(10.0, 10.0, 70.0, 10.0, 2.0, 0.0)
    after = Times(40.0, 20.0, 100.0, 20.0, 5.0, 0.0)  # 40 busy of 80 elapsed
    assert busy_percentage(before, after) == pytest.approx(50.0)
    assert busy_percentage(after, after) == 0.0


def test_two_samplers_in_one_process_each_cover_their_own_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the machine: fully busy for 100 s, then idle for 100 s
    clock = iter(
        [
            Times(0, 0, 0, 0, 0, 0),  # A starts
            Times(100, 0, 0, 0, 0, 0),  # B starts, after the busy part
            Times(100, 0, 100, 0, 0, 0),  # A samples: half busy over its 200 s
            Times(100, 0, 100, 0, 0, 0),  # B samples: idle over its 100 s
        ]
    )
    monkeypatch.setattr(system_metrics.psutil, "cpu_times", lambda: next(clock))
    a, b = SystemSampler(), SystemSampler()
    a.sample()
    b.sample()

    def cpu(s: SystemSampler) -> float:
        (point,) = [p for p in s.take() if p.key.endswith("cpu_utilization_percentage")]
        return point.value

    assert cpu(a) == 50.0 and cpu(b) == 0.0
