"""The same seeded job over every backend, in one process and as one process per task
(``python -m flame.launch``), against real gRPC on loopback and the real Mosquitto broker."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

import flame
from flame.config import MqttSettings
from flame.jobdir import load_job_dir
from flame.launch import EXIT_CONFIG, EXIT_QUORUM
from flame.plan import expand
from flame.tensors import Weights

JOB = Path(__file__).parents[2] / "examples" / "central-numpy"
SMALL = {
    "rounds": 4,
    "datasets": {"default": ["digits-0", "digits-1", "digits-2"]},
    "min_trainers": 2,
}


def max_diff(a: Weights, b: Weights) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.fixture(scope="module")
def reference() -> flame.SimulationResult:
    return flame.simulate(JOB, overrides={"rounds": 5})


@pytest.mark.parametrize("backend", ["grpc", "mqtt"])
def test_one_process_over_a_network_backend_equals_inproc(
    backend: str, reference: flame.SimulationResult
) -> None:
    result = flame.simulate(
        JOB, backend=backend, overrides={"rounds": 5}, job_id=f"e2e-{uuid.uuid4().hex[:12]}"
    )
    assert max_diff(result.weights, reference.weights) <= 1e-6
    assert [h["trainers"] for h in result.history] == [10] * 6


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["grpc", "mqtt"])
def test_one_process_per_task_equals_inproc(backend: str, tmp_path: Path) -> None:
    inproc = flame.simulate(JOB, overrides=SMALL)
    result = flame.simulate(
        JOB,
        backend=backend,
        processes=True,
        overrides=SMALL,
        workdir=tmp_path,
        job_id=f"e2e-{uuid.uuid4().hex[:12]}",
    )
    assert max_diff(result.weights, inproc.weights) <= 1e-6
    assert [h["round"] for h in result.history] == [0, 1, 2, 3, 4]
    task_dirs = sorted((tmp_path / "tasks").iterdir())
    assert len(task_dirs) == 4
    assert all((d / "result.json").exists() for d in task_dirs)


def _launch(config_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flame.launch", str(config_path), "--no-track"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_launch_reports_a_bad_config_with_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"job_id": "x"}')
    proc = _launch(bad, tmp_path)
    assert proc.returncode == EXIT_CONFIG
    assert "configuration error" in proc.stderr


def test_launch_fails_cleanly_when_no_trainer_ever_answers(tmp_path: Path) -> None:
    """A top aggregator alone (mqtt, trainers never started): after round_timeout it stops
    with QuorumLost and exit code 3 instead of hanging."""
    jd = load_job_dir(JOB)
    spec = jd.spec.model_copy(
        update={
            "rounds": 2,
            "round_timeout": 1.0,
            "min_trainers": 1,
            "quorum_grace": 0.0,
            "backend": "mqtt",
        }
    )
    configs = expand(
        jd.design,
        spec,
        jd.datasets,
        job_id=f"e2e-{uuid.uuid4().hex[:12]}",
        job_name="lonely",
        workdir=str(tmp_path),
        mqtt=MqttSettings(),
    )
    (agg,) = [c for c in configs if c.role == "aggregator"]
    (tmp_path / "config.json").write_text(agg.model_dump_json(by_alias=True))
    proc = _launch(tmp_path / "config.json", JOB)  # code from <cwd>/aggregator/main.py
    assert proc.returncode == EXIT_QUORUM, proc.stderr
    assert "quorum lost" in proc.stderr and "min_trainers is 1" in proc.stderr
    assert not (tmp_path / "result.json").exists()
    json.loads(agg.model_dump_json())  # the config we wrote is plain JSON
