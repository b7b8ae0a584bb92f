"""``flame.simulate`` at 10 to 10,000 trainers, each figure a ratio to a plain loop measured in
the same run (issue 21, "linear scale").

Every trainer holds 32 synthetic samples of the digits shape (64 features, 10 classes) and
does five full-batch softmax-regression steps per round, so the work per trainer is small and
what grows with N is the platform's own cost: messages, collect, selection, FedAvg. The plain
loop calls the same trainers' ``load_weights / evaluate / train / weights`` and the same FedAvg
strategy, with no channels, messages or validation. Per-round times are the median over rounds
2..R (round 1 includes warm-up); the whole-run time of ``flame.simulate`` includes its
start-up and teardown. Memory at the largest size is measured in a fresh process: its peak RSS
over the RSS before the run, per trainer.

The largest size runs again with ``backend="ray"`` in a fresh process (a local Ray cluster,
one host per CPU, Ray's start included), and its final weights are compared with the inproc
run's (SHA-256 of the same safetensors bytes).

Targets (reported, never asserted): <= 1.3x the plain loop per round at 10 trainers, <= 2x at
1,000; 10,000 trainers complete 3 rounds with <= 0.2 MB per trainer; over Ray, 10,000 trainers
end with inproc's weights.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

import flame
from flame import Aggregator, Trainer
from flame.aggregation import Update, make_strategy
from flame.channels.factory import ChannelSet
from flame.plan import expand
from flame.tensors import to_bytes
from flame_spec import parse_design, parse_job_spec

HERE = Path(__file__).parent
RESULTS = HERE / "results"
SIZES = (10, 100, 1_000, 10_000)
ROUNDS = {10: 20, 100: 10, 1_000: 5, 10_000: 3}
SAMPLES, FEATURES, CLASSES, STEPS = 32, 64, 10, 5
TARGETS = {"ratio_at_10": 1.3, "ratio_at_1000": 2.0, "mb_per_trainer_at_10000": 0.2}

DESIGN = {
    "roles": [
        {"name": "trainer", "isDataConsumer": True, "groupAssociation": [{"c": "default"}]},
        {"name": "aggregator", "replica": 1, "groupAssociation": [{"c": "default"}]},
    ],
    "channels": [
        {
            "name": "c",
            "pair": ["trainer", "aggregator"],
            "groupBy": {"type": "tag", "value": ["default"]},
            "funcTags": {"trainer": ["fetch", "upload"], "aggregator": ["distribute", "aggregate"]},
        }
    ],
}


def spec(n: int, rounds: int) -> dict[str, Any]:
    return {
        "rounds": rounds,
        "datasets": {"default": [f"s{i}" for i in range(n)]},
        "optimizer": {"name": "fedavg"},
        "selector": {"name": "all"},
        "min_trainers": n,
        "round_timeout": 600,
        "seed": 0,
    }


def _model() -> dict[str, np.ndarray]:
    return {
        "w": np.zeros((FEATURES, CLASSES), dtype=np.float32),
        "b": np.zeros(CLASSES, dtype=np.float32),
    }


class TinyTrainer(Trainer):
    """Five full-batch softmax-regression steps on 32 samples of its own."""

    def initialize(self) -> None:
        self.model = _model()

    def load_data(self) -> None:
        seed = int(self.config.dataset.name[1:]) if self.config.dataset else 0
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(SAMPLES, FEATURES)).astype(np.float32)
        self.y = rng.integers(0, CLASSES, SAMPLES)
        self.dataset_size = SAMPLES

    def train(self) -> None:
        w, b = self.model["w"], self.model["b"]
        for _ in range(STEPS):
            z = self.x @ w + b
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(SAMPLES), self.y] -= 1.0
            p /= SAMPLES
            w, b = w - self.x.T @ p, b - p.sum(axis=0)
        self.model = {"w": w, "b": b}

    def evaluate(self) -> dict[str, float]:
        z = self.x @ self.model["w"] + self.model["b"]
        return {"accuracy": float((z.argmax(axis=1) == self.y).mean())}


class TinyAggregator(Aggregator):
    def initialize(self) -> None:
        self.model = _model()


ROLES: dict[str, type[Any]] = {"trainer": TinyTrainer, "aggregator": TinyAggregator}


def plain_loop(n: int, rounds: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each round of the same work with no platform."""
    design, job = parse_design(DESIGN), parse_job_spec(spec(n, rounds))
    datasets = {f"s{i}": f"s{i}" for i in range(n)}
    configs = expand(design, job, datasets, job_id="bench", job_name="bench")
    trainers: list[Any] = []
    for cfg in configs:
        if cfg.role == "trainer":
            t = TinyTrainer(cfg, ChannelSet({}))
            t.initialize()
            t.load_data()
            trainers.append(t)
    agg = TinyAggregator(next(c for c in configs if c.role == "aggregator"), ChannelSet({}))
    agg.initialize()
    global_w = agg.weights
    strategy = make_strategy(job.optimizer)
    walls, cpus = [], []
    for rnd in range(1, rounds + 1):
        started, cpu = time.perf_counter(), time.process_time()
        updates = []
        for t in trainers:
            t.round = rnd
            t.global_weights = global_w
            t.load_weights(global_w)
            t.evaluate()
            t.train()
            updates.append(Update(t.config.task_id, t.weights, t.dataset_size, rnd))
        global_w = strategy.aggregate(global_w, updates, rnd)
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def simulated(n: int, rounds: int, backend: str = "inproc") -> dict[str, Any]:
    """One ``flame.simulate``: wall seconds of each round (its history), CPU seconds of rounds
    2..R (between the ``on_round`` calls: one thread runs every task; not meaningful on Ray),
    the whole run, and the SHA-256 of the final weights."""
    marks: list[float] = []
    started = time.perf_counter()
    result = flame.simulate(
        (DESIGN, spec(n, rounds)),
        roles=ROLES,
        backend=backend,  # type: ignore[arg-type]
        on_round=lambda _: marks.append(time.process_time()),
    )
    whole = time.perf_counter() - started
    return {
        "walls": [float(h["round_time"]) for h in result.history[:-1]],  # the last: final eval
        "cpus": [b - a for a, b in itertools.pairwise(marks[:-1])],
        "whole": whole,
        "rounds_done": len(result.history) - 1,
        "weights_sha256": hashlib.sha256(to_bytes(result.weights)).hexdigest(),
    }


Plain = tuple[list[float], list[float]]


def row(n: int, plains: list[Plain], sims: list[dict[str, Any]]) -> dict[str, Any]:
    """Best median (rounds 2..R; round 1 includes warm-up) of each over interleaved runs."""
    plain = min(statistics.median(w[1:]) for w, _ in plains)
    plain_cpu = min(statistics.median(c[1:]) for _, c in plains)
    sim = min(statistics.median(r["walls"][1:]) for r in sims)
    sim_cpu = min(statistics.median(r["cpus"]) for r in sims)
    return {
        "trainers": n,
        "rounds": ROUNDS[n],
        "plain_ms_per_round": round(plain * 1000, 3),
        "simulate_ms_per_round": round(sim * 1000, 3),
        "ratio": round(sim / plain, 3),
        "plain_cpu_ms_per_round": round(plain_cpu * 1000, 3),
        "simulate_cpu_ms_per_round": round(sim_cpu * 1000, 3),
        "cpu_ratio": round(sim_cpu / plain_cpu, 3),
        "simulate_whole_run_s": round(min(r["whole"] for r in sims), 3),
    }


def measure(n: int, repeats: int) -> dict[str, Any]:
    plains, sims = [], []
    for _ in range(repeats):  # interleaved: a burst of load lands on both sides
        plains.append(plain_loop(n, ROUNDS[n]))
        sims.append(simulated(n, ROUNDS[n]))
    return row(n, plains, sims)


def _rss_kb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def memory_probe(n: int) -> dict[str, Any]:
    """Run in a fresh process: one ``flame.simulate`` of ``n`` trainers; peak RSS growth."""
    _quiet()
    before = _rss_kb()
    sim = simulated(n, ROUNDS[n])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        **sim,
        "trainers": n,
        "peak_rss_mb": round(peak / 1024, 1),
        "mb_per_trainer": round((peak - before) / 1024 / n, 4),
    }


def ray_probe(n: int) -> dict[str, Any]:
    """Run in a fresh process: the same job on a local Ray cluster (one host per CPU), Ray's
    start included in the whole run."""
    _quiet()
    sim = simulated(n, ROUNDS[n], backend="ray")
    import ray

    return {**sim, "hosts": int(ray.cluster_resources().get("CPU", 1))}


def fresh(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.simulate_scale", *args],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def on_ray(n: int, inproc_sha256: str) -> dict[str, Any]:
    """The largest size over Ray, against the inproc run's final weights."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return {"trainers": n, "skipped": "ray is not installed"}
    sim = fresh("--ray", str(n))
    return {
        "trainers": n,
        "hosts": sim["hosts"],
        "rounds_done": sim["rounds_done"],
        "seconds": round(sim["whole"], 3),
        "ms_per_round": round(statistics.median(sim["walls"][1:]) * 1000, 1),
        "same_weights_as_inproc": sim["weights_sha256"] == inproc_sha256,
    }


def largest(n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The largest size: its simulation runs in a fresh process (which measures its memory
    too), then the plain loop here."""
    sim = fresh("--memory", str(n))
    mem = {
        "trainers": n,
        "rounds_done": sim["rounds_done"],
        "seconds": round(sim["whole"], 3),
        "peak_rss_mb": sim["peak_rss_mb"],
        "mb_per_trainer": sim["mb_per_trainer"],
        "weights_sha256": sim["weights_sha256"],
    }
    return row(n, [plain_loop(n, ROUNDS[n])], [sim]), mem


def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ns = [r["trainers"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.loglog(ns, [r["plain_ms_per_round"] for r in rows], "o-", label="plain loop")
    left.loglog(ns, [r["simulate_ms_per_round"] for r in rows], "o-", label="flame.simulate")
    left.set_xlabel("trainers")
    left.set_ylabel("ms per round")
    left.legend()
    right.semilogx(ns, [r["ratio"] for r in rows], "o-", color="#d62728", label="wall time")
    right.semilogx(ns, [r["cpu_ratio"] for r in rows], "s--", color="#9467bd", label="CPU time")
    right.axhline(2.0, color="gray", linestyle="--", label="target at 1,000 (2x)")
    right.axhline(1.3, color="gray", linestyle=":", label="target at 10 (1.3x)")
    right.set_xlabel("trainers")
    right.set_ylabel("x plain loop (lower is better)")
    right.legend()
    fig.suptitle("flame.simulate per round vs a plain loop, same run")
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def table_row(rows: list[dict[str, Any]], mem: dict[str, Any], ray: dict[str, Any]) -> str:
    """One row of the README's benchmark table."""
    ratios = ", ".join(
        f"{int(r['trainers']):,}: {r['ratio']:.2f}x ({r['cpu_ratio']:.2f}x CPU)" for r in rows
    )
    if "skipped" in ray:
        on_ray = f"Ray: {ray['skipped']}"
    else:
        same = "the same weights as inproc" if ray["same_weights_as_inproc"] else "OTHER weights"
        on_ray = (
            f"over Ray ({ray['hosts']} hosts): {int(ray['trainers']):,} trainers, "
            f"{ray['rounds_done']} rounds in {ray['seconds']:.1f} s with Ray's start, {same}"
        )
    return (
        f"| simulate_scale | `flame.simulate` per round / plain loop ({ratios}); "
        f"{int(mem['trainers']):,} trainers: {mem['mb_per_trainer']:.3f} MB per trainer; "
        f"{on_ray} | <= 1.3x at 10, <= 2x at 1,000, <= 0.2 MB; Ray: runs 10,000, same weights |"
    )


def main(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    _quiet()
    load_before = os.getloadavg()[0]
    rows = [measure(n, repeats=3 if n <= 100 else 1) for n in sizes[:-1]]
    last, mem = largest(sizes[-1])
    rows.append(last)
    over_ray = on_ray(sizes[-1], mem["weights_sha256"])
    png = RESULTS / "simulate_scale.png"
    by_n = {int(r["trainers"]): r["ratio"] for r in rows}
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "targets": TARGETS,
        "met": {
            "ratio_at_10": by_n.get(10, 0) <= TARGETS["ratio_at_10"],
            "ratio_at_1000": by_n.get(1_000, 0) <= TARGETS["ratio_at_1000"],
            "mb_per_trainer_at_10000": mem["mb_per_trainer"] <= TARGETS["mb_per_trainer_at_10000"],
            "ray_same_weights_at_10000": bool(over_ray.get("same_weights_as_inproc")),
        },
        "rows": rows,
        "memory": mem,
        "ray": over_ray,
        "table_row": table_row(rows, mem, over_ray),
        "plot": str(png.relative_to(HERE)) if plot(rows, png) else None,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory":
        print(json.dumps(memory_probe(int(sys.argv[2]))))
    elif len(sys.argv) == 3 and sys.argv[1] == "--ray":
        print(json.dumps(ray_probe(int(sys.argv[2]))))
    else:
        from benchmarks.run import main as run

        raise SystemExit(run(["simulate_scale"]))
