"""What MLflow tracking adds to a job on the control plane: the same job with and without it.

The issue's workload (digits, 10 IID shards, numpy logistic regression, 20 rounds of FedAvg,
``examples/central-numpy``) runs on an embedded stack with its MLflow server, as ``flamectl up``
starts it, alternately with tracking on (the default: a run with params, per-round metrics and
system metrics, the best model logged and registered) and off (``"tracking": {"enabled":
false}``: the round metrics still reach the control plane), each submitted to a quiet stack
(``control_plane_round.settle``). The first job of each kind is a warm-up and not counted.
Reported: each job's phases (``control_plane_round.one_job``) and the median wall time with
tracking over the median without. Target: <= 1.05.
Usage: python -m benchmarks.mlflow_cost [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.control_plane_round import (
    EXAMPLE,
    ROUNDS,
    one_job,
    phase_medians,
    phase_plot,
    settle,
)
from benchmarks.job_start import TRAINERS, machine, new_design
from benchmarks.run import RESULTS, save
from tests.e2e.jobs_harness import start_cluster

TARGET_RATIO = 1.05
KINDS = {"on": {}, "off": {"tracking": {"enabled": False}}}


def main(reps: int = 3) -> dict[str, Any]:
    before = machine()
    jobs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="flame-bench-") as tmp:
        cluster = start_cluster(Path(tmp) / "stack", nodes=TRAINERS, shards=TRAINERS, mlflow=True)
        try:
            design = new_design(cluster, EXAMPLE, "bench-mlflow")
            for rep in range(reps + 1):  # rep 0 warms both kinds up
                for kind, overrides in KINDS.items():
                    settle()
                    job = one_job(
                        cluster, design, f"bench-mlflow-{kind}-{rep}", EXAMPLE, **overrides
                    )
                    if rep:
                        jobs[kind].append(job)
        finally:
            cluster.client.close()
            cluster.stack.down(cluster.state)
    medians = {kind: phase_medians(runs) for kind, runs in jobs.items()}
    ratio = medians["on"]["job_wall_s"] / medians["off"]["job_wall_s"]
    png = RESULTS / "mlflow_cost.png"
    row = (
        f"| mlflow_cost | {EXAMPLE} job, {TRAINERS} trainers, {ROUNDS} rounds, median wall: "
        f"{medians['on']['job_wall_s']:.2f} s with MLflow tracking = {ratio:.2f}x the same job "
        f"without it ({medians['off']['job_wall_s']:.2f} s); last round -> completed "
        f"{medians['on']['last_metrics_to_completed_s']:.2f} vs "
        f"{medians['off']['last_metrics_to_completed_s']:.2f} s | <= {TARGET_RATIO}x |"
    )
    return {
        "machine": {**before, "load_average_1min_after": round(os.getloadavg()[0], 2)},
        "setup": {"example": EXAMPLE, "trainers": TRAINERS, "rounds": ROUNDS, "reps": reps},
        "jobs": jobs,
        "medians": medians,
        "wall_ratio_tracking_on_off": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "within_target": ratio <= TARGET_RATIO,
        "table_row": row,
        "plot": str(png.relative_to(Path(__file__).parent))
        if phase_plot({"tracking off": medians["off"], "MLflow tracking": medians["on"]}, png)
        else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    result = main(args.reps)
    save("mlflow_cost", result, time.perf_counter() - started)
