"""flame.simulate and `flamectl run --local`: job dirs, (design, spec) pairs, tracking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import flame
from flame.cli.run_local import run_local_command
from flame.errors import ConfigError
from flame.roles import load_role_class

EXAMPLES = Path(__file__).parents[3] / "examples"
JOB = EXAMPLES / "central-numpy"


def test_design_and_spec_without_a_job_dir() -> None:
    design = json.loads((JOB / "design.json").read_text())
    spec = json.loads((JOB / "job.json").read_text())
    spec.update(rounds=3, datasets={"default": ["a", "b"]}, min_trainers=2)
    roles = {
        "trainer": load_role_class(JOB / "trainer" / "main.py"),
        "aggregator": load_role_class(JOB / "aggregator" / "main.py"),
    }
    result = flame.simulate(
        (design, spec), roles=roles, datasets={"a": "digits://iid/2/0", "b": "digits://iid/2/1"}
    )
    assert [h["round"] for h in result.history] == [0, 1, 2, 3]
    assert result.history[-1]["accuracy"] > 0.8
    assert result.weights["w"].shape == (64, 10) and result.weights["w"].dtype == np.float32
    assert sorted(r.role for r in result.tasks.values()) == ["aggregator", "trainer", "trainer"]


def test_local_npz_shards_from_datasets_json(tmp_path: Path) -> None:
    from flame.datasets import write_digits_shards

    paths = write_digits_shards(tmp_path / "data", 2, alpha=0.5)
    job = tmp_path / "job"
    for part in ("design.json", "trainer", "aggregator"):
        src = JOB / part
        if src.is_dir():
            (job / part).mkdir(parents=True)
            (job / part / "main.py").write_text((src / "main.py").read_text())
        else:
            job.mkdir(exist_ok=True)
            (job / part).write_text(src.read_text())
    spec = json.loads((JOB / "job.json").read_text())
    spec.update(rounds=2, datasets={"default": ["s0", "s1"]}, min_trainers=1)
    (job / "job.json").write_text(json.dumps(spec))
    (job / "datasets.json").write_text(
        json.dumps({"s0": f"../data/{paths[0].name}", "s1": f"../data/{paths[1].name}"})
    )
    result = flame.simulate(job)
    assert len(result.history) == 3 and result.history[-1]["trainers"] == 2


def test_missing_role_code_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "design.json").write_text((JOB / "design.json").read_text())
    (tmp_path / "job.json").write_text((JOB / "job.json").read_text())
    with pytest.raises(ConfigError, match=r"trainer/main\.py"):
        flame.simulate(tmp_path)


def test_run_local_prints_rounds_and_tracks_to_mlflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_local_command(JOB, "inproc", False, workdir=tmp_path, rounds=2)
    out = capsys.readouterr().out.splitlines()
    lines = [json.loads(line) for line in out if line.startswith("{")]
    assert [entry["round"] for entry in lines[:-1]] == [0, 1, 2]
    summary: dict[str, Any] = lines[-1]["summary"]
    assert summary["run_id"] and summary["model_uri"] == "models:/central-numpy@best"
    assert result.tracking is not None and result.tracking.best_round is not None
    assert (tmp_path / "mlflow.db").exists()


def test_the_torch_example_learns_through_the_adapter() -> None:
    result = flame.simulate(
        EXAMPLES / "central",
        overrides={
            "rounds": 3,
            "datasets": {"default": ["digits-0", "digits-1", "digits-2"]},
            "min_trainers": 3,
        },
    )
    assert set(result.weights) == {"weight", "bias"}
    assert result.weights["weight"].shape == (10, 64)
    accuracy = [h["accuracy"] for h in result.history]
    assert accuracy[-1] > 0.8 > accuracy[0]
