"""flame.simulate round overhead vs a plain loop doing the same compute (DESIGN §6).

The digits job (10 IID shards, 20 rounds): the plain loop calls each trainer's own
``load_weights / evaluate / train / weights`` and the same FedAvg strategy, with no channels,
messages or validation; ``flame.simulate`` (inproc) runs the real roles. Per-round times are
the median over rounds 2..20 (round 1 includes warm-up). Target: simulate <= 1.3x plain.
Run both the torch example (logistic regression, minibatch SGD) and the NumPy one; then the
NumPy one over grpc with one process per task (``processes=True``): its rounds (target
<= 2.5x the plain loop) and its whole run (target <= 4 s).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

import flame
from flame.aggregation import Update, make_strategy
from flame.channels.factory import ChannelSet
from flame.jobdir import load_job_dir
from flame.plan import expand
from flame.roles import Trainer, load_role_class

EXAMPLES = Path(__file__).parents[1] / "examples"


def plain_loop(job: Path, rounds: int) -> list[float]:
    jd = load_job_dir(job)
    spec = jd.spec.model_copy(update={"rounds": rounds})
    configs = expand(jd.design, spec, jd.datasets, job_id="bench", job_name="bench")
    trainer_cls = load_role_class(jd.role_code("trainer"))
    agg_cls = load_role_class(jd.role_code("aggregator"))
    trainers: list[Any] = []
    for cfg in configs:
        if cfg.role == "trainer":
            t = trainer_cls(cfg, ChannelSet({}))
            assert isinstance(t, Trainer)
            t.initialize()
            t.load_data()
            trainers.append(t)
    agg: Any = agg_cls(next(c for c in configs if c.role == "aggregator"), ChannelSet({}))
    agg.initialize()
    global_w = agg.weights
    strategy = make_strategy(spec.optimizer)
    times = []
    for rnd in range(1, rounds + 1):
        started = time.perf_counter()
        updates = []
        for t in trainers:
            t.round = rnd
            t.global_weights = global_w
            t.load_weights(global_w)
            t.evaluate()
            t.train()
            updates.append(Update(t.config.task_id, t.weights, t.dataset_size, rnd))
        global_w = strategy.aggregate(global_w, updates, rnd)
        times.append(time.perf_counter() - started)
    return times


def simulated(job: Path, rounds: int) -> list[float]:
    result = flame.simulate(job, overrides={"rounds": rounds})
    return [float(h["round_time"]) for h in result.history[:-1]]  # the last is the final eval


def compare(job: Path, rounds: int = 20, repeats: int = 5) -> dict[str, float]:
    """Best median round time of each over ``repeats`` interleaved runs (the machine is shared:
    interleaving keeps a burst of load from landing on one side only)."""
    plains, sims = [], []
    for _ in range(repeats):
        plains.append(statistics.median(plain_loop(job, rounds)[1:]))
        sims.append(statistics.median(simulated(job, rounds)[1:]))
    plain, sim = min(plains), min(sims)
    return {
        "plain_ms_per_round": round(plain * 1000, 3),
        "simulate_ms_per_round": round(sim * 1000, 3),
        "ratio": round(sim / plain, 3),
        "overhead_ms_per_round": round((sim - plain) * 1000, 3),
    }


def pure_overhead(rounds: int = 50) -> dict[str, float]:
    """Rounds whose training does nothing: what a round costs in messages, validation and
    aggregation alone (10 trainers, the 64x10 digits model)."""
    job = EXAMPLES / "central-numpy"
    trainer: Any = load_role_class(job / "trainer" / "main.py")

    class Idle(trainer):  # type: ignore[misc, valid-type]
        def train(self) -> None:
            self.model = {k: v + 0.001 for k, v in self.model.items()}

        def evaluate(self) -> dict[str, float]:
            return {"accuracy": 0.0}

    times = [
        float(h["round_time"])
        for h in flame.simulate(job, roles={"trainer": Idle}, overrides={"rounds": rounds}).history
    ][1:-1]
    return {
        "median_ms": round(statistics.median(times) * 1000, 3),
        "p90_ms": round(sorted(times)[int(0.9 * len(times))] * 1000, 3),
    }


def processes(job: Path, rounds: int = 20, repeats: int = 3) -> dict[str, float]:
    """``flame.simulate(backend="grpc", processes=True)``: one OS process per task, as
    ``flamectl run --local --processes`` runs a job. Best of ``repeats``: the whole run (start
    to results, every process started and ended) and the median round (2..)."""
    walls, rounds_s = [], []
    with tempfile.TemporaryDirectory(prefix="flame-bench-") as tmp:
        for i in range(repeats):
            started = time.perf_counter()
            result = flame.simulate(
                job,
                backend="grpc",
                processes=True,
                overrides={"rounds": rounds},
                workdir=Path(tmp) / str(i),
            )
            walls.append(time.perf_counter() - started)
            times = [float(h["round_time"]) for h in result.history[:-1]]
            rounds_s.append(statistics.median(times[1:]))
    return {"whole_run_s": round(min(walls), 3), "ms_per_round": round(min(rounds_s) * 1000, 3)}


TARGETS = {"inproc_ratio": 1.3, "processes_ratio": 2.5, "processes_whole_run_s": 4.0}


def main() -> dict[str, Any]:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    out: dict[str, Any] = {"targets": TARGETS}
    for name in ("central", "central-numpy"):
        out[name] = compare(EXAMPLES / name)
    numpy_job = out["central-numpy"]
    procs = processes(EXAMPLES / "central-numpy")
    procs["ratio"] = round(procs["ms_per_round"] / numpy_job["plain_ms_per_round"], 3)
    out["grpc_processes"] = procs
    out["idle_round_overhead"] = pure_overhead()
    out["table_row"] = (
        "| simulate_overhead | digits, 10 trainers, 20 rounds, per round / a plain loop of the "
        f"same trainers (same run): inproc {numpy_job['ratio']:.2f}x "
        f"({numpy_job['simulate_ms_per_round']:.2f} vs {numpy_job['plain_ms_per_round']:.2f} ms; "
        f"torch example {out['central']['ratio']:.2f}x); grpc, one process per task: "
        f"{procs['ratio']:.1f}x ({procs['ms_per_round']:.1f} ms), whole run "
        f"{procs['whole_run_s']:.2f} s | <= {TARGETS['inproc_ratio']}x inproc; "
        f"<= {TARGETS['processes_ratio']}x and <= {TARGETS['processes_whole_run_s']:g} s with "
        "processes |"
    )
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
