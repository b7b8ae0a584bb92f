"""What MLflow tracking adds to a job on the control plane: the same job with and without it.

The issue's workload (digits, 10 IID shards, numpy logistic regression, 20 rounds of FedAvg,
``examples/central-numpy``) runs on an embedded stack with its MLflow server, as ``flamectl up``
starts it, alternately with tracking on (the default: a run with params, per-round metrics and
system metrics, the best model logged and registered) and off (``"tracking": {"enabled":
false}``: the round metrics still reach the control plane). The first job of each kind is a
warm-up and not counted. Reported: each job's phases (``control_plane_round.one_job``) and the
median wall time with tracking over the median without. Target: <= 1.05.
Usage: python -m benchmarks.mlflow_cost [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.control_plane_round import ROUNDS, one_job
from benchmarks.job_start import TRAINERS, machine, new_design
from benchmarks.run import RESULTS, save
from tests.e2e.jobs_harness import start_cluster

EXAMPLE = "central-numpy"
TARGET_RATIO = 1.05
PHASES = ("running_to_first_metrics_s", "steady_per_round_s", "last_metrics_to_completed_s")
KINDS = {"on": {}, "off": {"tracking": {"enabled": False}}}


def median_of(jobs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(j[key] for j in jobs), 4)


def plot(medians: dict[str, dict[str, float]], path: Path) -> bool:
    """Stacked bars: where a job's wall time goes, with tracking and without."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 3))
    labels = {
        "start_to_all_running_s": "start -> all tasks running",
        "running_to_first_metrics_s": "-> first round's metrics",
        "rounds_s": f"{ROUNDS} rounds",
        "last_metrics_to_completed_s": "last metrics -> job completed",
    }
    colors = dict(zip(labels, ("tab:gray", "tab:blue", "tab:green", "tab:orange"), strict=True))
    for row, kind in enumerate(("off", "on")):
        left = 0.0
        for key, label in labels.items():
            width = medians[kind][key]
            ax.barh(row, width, left=left, color=colors[key], label=label if row == 0 else None)
            left += width
    ax.set_yticks([0, 1], ["tracking off", "MLflow tracking"])
    ax.set_xlabel("seconds (median job)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(reps: int = 3) -> dict[str, Any]:
    before = machine()
    jobs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="flame-bench-") as tmp:
        cluster = start_cluster(Path(tmp) / "stack", nodes=TRAINERS, shards=TRAINERS, mlflow=True)
        try:
            design = new_design(cluster, EXAMPLE, "bench-mlflow")
            for rep in range(reps + 1):  # rep 0 warms both kinds up
                for kind, overrides in KINDS.items():
                    job = one_job(
                        cluster, design, f"bench-mlflow-{kind}-{rep}", EXAMPLE, **overrides
                    )
                    if rep:
                        jobs[kind].append(job)
        finally:
            cluster.client.close()
            cluster.stack.down(cluster.state)
    medians: dict[str, dict[str, float]] = {}
    for kind, runs in jobs.items():
        m = {key: median_of(runs, key) for key in ("job_wall_s", "start_to_all_running_s", *PHASES)}
        m["rounds_s"] = round(
            m["job_wall_s"]
            - m["start_to_all_running_s"]
            - m["running_to_first_metrics_s"]
            - m["last_metrics_to_completed_s"],
            4,
        )
        medians[kind] = m
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
        "plot": str(png.relative_to(Path(__file__).parent)) if plot(medians, png) else None,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    result = main(args.reps)
    save("mlflow_cost", result, time.perf_counter() - started)
