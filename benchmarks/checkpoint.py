"""An aggregator's end-of-round checkpoint as the job grows long (issue 21.3, linear scale).

The digits model (64x10 + 10 float32) with a best model, FedAdam-sized strategy state and a
metric history of 10, 1,000 and 10,000 rounds: the median time of a round's save (each save adds
one history entry, fsynced as the aggregator does it), in one temporary folder per length. For
reference, in the same run, the same saves with the whole history written into the checkpoint
file every round (what format 1 did). Target: a round's save costs what it costs after 10 rounds,
whatever the job's length.
Usage: python -m benchmarks.checkpoint
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from typing import Any

import numpy as np

from flame.checkpoint import AggregatorCheckpoint, save_checkpoint

LENGTHS = (10, 1_000, 10_000)
SAVES = 21


def _entry(rnd: int) -> dict[str, float]:
    keys = ("accuracy", "loss", "trainers", "declined", "partial", "round_time", "server/norm")
    return {"round": rnd, **{k: 0.5 + rnd / 1e5 for k in keys}}


def _state() -> AggregatorCheckpoint:
    rng = np.random.default_rng(0)
    model = {"w": rng.standard_normal((64, 10)).astype(np.float32), "b": np.zeros(10, np.float32)}
    return AggregatorCheckpoint(
        round=1,
        weights=model,
        strategy_tensors={f"m/{k}": v.copy() for k, v in model.items()},
        selector={"name": "random", "rng": list(range(625))},  # a Mersenne state's size
        best_round=0,
        best_weights=model,
        best_metrics={"accuracy": 0.5},
        extra={"joined": {f"trainer-{i}": 1 for i in range(10)}},
    )


def per_round_ms(rounds: int, *, inline: bool) -> float:
    """Median ms of a save after ``rounds`` rounds, each save one round more."""
    history = [_entry(r) for r in range(rounds)]
    base = _state()
    times = []
    with tempfile.TemporaryDirectory(prefix="flame-bench-ckpt-") as folder:
        for n in range(SAVES + 1):
            history.append(_entry(rounds + n))
            if inline:  # the history in the checkpoint's own JSON, as format 1 kept it
                ckpt = replace(base, round=rounds + n, extra={**base.extra, "history": history})
            else:
                ckpt = replace(base, round=rounds + n, history=history)
            started = time.perf_counter()
            save_checkpoint(folder, ckpt)
            if n:  # the first save writes the whole history once
                times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> dict[str, Any]:
    per_round_ms(LENGTHS[0], inline=False)  # warm-up: imports, first files
    saves = {n: per_round_ms(n, inline=False) for n in LENGTHS}
    inline = {n: per_round_ms(n, inline=True) for n in LENGTHS}
    base = saves[LENGTHS[0]]
    ratios = {n: saves[n] / base for n in LENGTHS}
    longest = LENGTHS[-1]
    row = (
        "| checkpoint | an aggregator's save at the end of a round (digits model, fsynced), "
        f"history of {' / '.join(f'{n:,}' for n in LENGTHS)} rounds: "
        f"{' / '.join(f'{saves[n]:.2f}' for n in LENGTHS)} ms = "
        f"{' / '.join(f'{ratios[n]:.2f}x' for n in LENGTHS)} the {LENGTHS[0]}-round save; "
        f"the history rewritten in every save (format 1): {inline[longest]:.1f} ms at "
        f"{longest:,} rounds = {inline[longest] / base:.1f}x | ~1x at any length |"
    )
    return {
        "saves_per_length": SAVES,
        "ms_per_save": {str(n): round(v, 3) for n, v in saves.items()},
        "ms_per_save_history_inline": {str(n): round(v, 3) for n, v in inline.items()},
        "x_the_first_length": {str(n): round(v, 2) for n, v in ratios.items()},
        "table_row": row,
    }


if __name__ == "__main__":
    from benchmarks.run import save

    started = time.perf_counter()
    save("checkpoint", main(), time.perf_counter() - started)
