"""``flamectl run --local DIR``: run a job directory on this machine (``flame.simulate``).

Each round is printed as soon as it ends (in one process or one process per task). In a
terminal the lines are short and human; otherwise (``-o json``, a pipe, a file) every round is
one JSON object per line and the last line is ``{"summary": {...}}``. The run's files live in one
folder under ``$FLAME_HOME/runs`` (see :mod:`flame.paths`), which the summary names along with
the MLflow store the run logged to."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from flame.simulation import SimBackend, SimulationResult, simulate

SHOWN = ("accuracy", "loss", "trainers", "round_time")


def _rounded(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}


def human_round(entry: dict[str, Any]) -> str:
    """``round  3  accuracy 0.9123  loss 0.2345  trainers 10  round_time 0.012``."""
    keys = [k for k in SHOWN if k in entry] or [k for k in entry if k != "round"][:4]
    parts = []
    for key in keys:
        value = entry[key]
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key} {text}")
    return f"round {entry.get('round', '?'):>3}  " + "  ".join(parts)


def tracking_store(result: SimulationResult) -> str | None:
    """The MLflow tracking URI the run logged to (from its run URI), if it tracked."""
    run_uri = result.tracking.run_uri if result.tracking is not None else None
    return run_uri.split("#", 1)[0] if run_uri else None


def run_local_command(
    job_dir: str | Path,
    backend: SimBackend = "inproc",
    processes: bool = False,
    *,
    workdir: str | Path | None = None,
    track: bool = True,
    rounds: int | None = None,
    human: bool | None = None,
    out: TextIO | None = None,
) -> SimulationResult:
    """Run ``job_dir`` locally; print each round as it ends, then a summary."""
    stream = out or sys.stdout
    as_human = stream.isatty() if human is None else human

    def on_round(entry: dict[str, Any]) -> None:
        text = human_round(entry) if as_human else json.dumps(_rounded(entry))
        print(text, file=stream, flush=True)

    overrides: dict[str, Any] = {"rounds": rounds} if rounds else {}
    result = simulate(
        job_dir,
        backend=backend,
        processes=processes,
        workdir=workdir,
        track=track,
        overrides=overrides or None,
        on_round=on_round,
    )
    if not any(r.is_top for r in result.tasks.values()):
        for entry in result.history:  # no aggregator streamed them (e.g. all-reduce jobs)
            on_round(entry)
    store = tracking_store(result)
    summary: dict[str, Any] = {"seconds": round(result.seconds, 3), "workdir": result.workdir}
    if result.tracking is not None:
        summary.update(
            run_id=result.tracking.run_id,
            model_uri=result.tracking.model_uri,
            tracking_uri=store,
        )
    if not as_human:
        print(json.dumps({"summary": summary}), file=stream, flush=True)
        return result
    final = result.final_metrics
    headline = f"done in {result.seconds:.1f}s"
    if "accuracy" in final:
        headline += f": accuracy {final['accuracy']:.4f} (round {final.get('round', '?')})"
    print(headline, file=stream)
    if result.workdir:
        print(f"run folder:     {result.workdir}", file=stream)
    if store:
        print(f"tracking store: {store}", file=stream)
        if result.tracking is not None and result.tracking.model_uri:
            print(f"model:          {result.tracking.model_uri} (in that store)", file=stream)
        print(f"browse it with: mlflow ui --backend-store-uri {store}", file=stream)
    return result
