"""``flamectl run --local DIR``: run a job directory on this machine (``flame.simulate``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flame.config import Backend
from flame.simulation import SimulationResult, simulate


def run_local_command(
    job_dir: str | Path,
    backend: Backend = "inproc",
    processes: bool = False,
    *,
    workdir: str | Path | None = None,
    track: bool = True,
    rounds: int | None = None,
) -> SimulationResult:
    """Run ``job_dir`` locally and print one line per round plus a summary (the CLI's output)."""
    overrides: dict[str, Any] = {"rounds": rounds} if rounds else {}
    result = simulate(
        job_dir,
        backend=backend,
        processes=processes,
        workdir=workdir,
        track=track,
        overrides=overrides or None,
    )
    for entry in result.history:
        metrics = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}
        print(json.dumps(metrics))
    summary: dict[str, Any] = {"seconds": round(result.seconds, 3), "workdir": result.workdir}
    if result.tracking is not None:
        summary.update(run_id=result.tracking.run_id, model_uri=result.tracking.model_uri)
    print(json.dumps({"summary": summary}))
    return result
