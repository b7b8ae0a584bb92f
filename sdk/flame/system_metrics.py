"""System metrics of a tracked run, sampled with psutil under MLflow's own names.

MLflow's UI shows ``system/*`` metrics in a run's "System metrics" tab. Its monitor would
import MLflow into the aggregator and send a request of its own every interval; this sampler
only collects, and :class:`~flame.tracking.MlflowTracker` sends what it took with the round
metrics (one request), and a last sample when the run ends.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psutil

from flame.mlflow_store import MetricPoint

PREFIX = "system/"


def busy_percentage(before: Any, after: Any) -> float:
    """The share of the CPUs' time between two ``psutil.cpu_times()`` that was not idle (guest
    time is already counted in user time on Linux, so it is not added twice)."""

    def idle(t: Any) -> float:
        return float(t.idle + getattr(t, "iowait", 0.0))

    def total(t: Any) -> float:
        return float(sum(t)) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)

    elapsed = total(after) - total(before)
    if elapsed <= 0:
        return 0.0
    busy = elapsed - (idle(after) - idle(before))
    return min(100.0, max(0.0, 100.0 * busy / elapsed))


class SystemSampler:
    """Samples the machine every ``interval`` seconds on a daemon thread until :meth:`stop`."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._points: list[MetricPoint] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._step = 0
        net = psutil.net_io_counters()
        self._net0 = (net.bytes_recv, net.bytes_sent) if net is not None else (0, 0)
        # this sampler's own CPU counter (psutil.cpu_percent() keeps one per process: two
        # simulated jobs in one process would each see the time since the other's sample)
        self._cpu = psutil.cpu_times()
        self._thread = threading.Thread(target=self._run, name="flame-system-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """Take one sample now (a step of its own)."""
        cpu, self._cpu = self._cpu, psutil.cpu_times()
        values = {"cpu_utilization_percentage": busy_percentage(cpu, self._cpu)}
        memory = psutil.virtual_memory()
        values["system_memory_usage_megabytes"] = memory.used / 1e6
        values["system_memory_usage_percentage"] = memory.used / memory.total * 100
        disk = psutil.disk_usage(os.sep)
        values["disk_usage_percentage"] = disk.percent
        values["disk_usage_megabytes"] = disk.used / 1e6
        values["disk_available_megabytes"] = disk.free / 1e6
        net = psutil.net_io_counters()
        if net is not None:
            values["network_receive_megabytes"] = (net.bytes_recv - self._net0[0]) / 1e6
            values["network_transmit_megabytes"] = (net.bytes_sent - self._net0[1]) / 1e6
        now = int(time.time() * 1000)
        with self._lock:
            step, self._step = self._step, self._step + 1
            self._points += [
                MetricPoint(PREFIX + k, round(v, 1), now, step) for k, v in values.items()
            ]

    def take(self) -> list[MetricPoint]:
        """The samples not taken yet, oldest first."""
        with self._lock:
            points, self._points = self._points, []
        return points

    def stop(self) -> None:
        """Stop sampling and take a last sample (a run shorter than one interval gets one)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()
