"""`flamectl run --local` as a user runs it: rounds appear as they finish, and every file the
run writes is under one documented folder ($FLAME_HOME/runs, default ~/.flame/runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import flame

EXAMPLES = Path(__file__).parents[2] / "examples"
JOB = EXAMPLES / "central-numpy"
FLAMECTL = str(Path(sys.executable).with_name("flamectl"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _user_env(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """A user with an empty home, working in an empty folder, with their own TMPDIR."""
    home, cwd, tmp = tmp_path / "home", tmp_path / "work", tmp_path / "tmp"
    for folder in (home, cwd, tmp):
        folder.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FLAME_HOME", "FLAME_CONFIG", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")
        and not k.startswith("MLFLOW_")
    }
    env.update(HOME=str(home), TMPDIR=str(tmp))
    return env, home, cwd


def test_a_tracked_local_run_writes_only_under_its_run_folder_and_says_where(
    tmp_path: Path,
) -> None:
    env, home, cwd = _user_env(tmp_path)
    before = _files(tmp_path)
    proc = subprocess.run(
        [FLAMECTL, "run", "--local", str(JOB), "--rounds", "2", "-o", "json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [entry["round"] for entry in lines[:-1]] == [0, 1, 2]
    summary = lines[-1]["summary"]
    runs = home / ".flame" / "runs"
    run_dir = Path(summary["workdir"])
    assert run_dir.parent == runs and run_dir.name.startswith("central-numpy-")
    assert summary["tracking_uri"] == f"sqlite:///{run_dir / 'mlflow.db'}"
    assert summary["model_uri"] == "models:/central-numpy@best"

    written = sorted(str(p.relative_to(tmp_path)) for p in _files(tmp_path) - before)
    outside = [p for p in written if not (tmp_path / p).is_relative_to(run_dir)]
    assert written and outside == [], f"files written outside {run_dir}: {outside}"
    # the model's artifacts sit in the run's folder, not in ./mlruns of the current directory
    assert any("mlartifacts" in p and p.endswith("weights.safetensors") for p in written)


GATE = """
    def train(self) -> None:
        # Round 3 waits until the parent has printed round 1 (the model after one aggregation,
        # which the trainers evaluate in round 2): possible only when rounds stream out of the
        # aggregator's process while the job is still running.
        import time
        from pathlib import Path

        if self.round >= 3:
            gate = Path(str(self.hyperparameters["gate"]))
            deadline = time.monotonic() + 120
            while not gate.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("round 1 was never shown while the job ran")
                time.sleep(0.02)
        self._train()

    def _train(self) -> None:"""


def _gated_job(folder: Path, gate: Path) -> Path:
    """central-numpy whose trainers hold round 3 until ``gate`` exists."""
    job = folder / "gated"
    (job / "trainer").mkdir(parents=True)
    (job / "aggregator").mkdir()
    for name in ("design.json", "datasets.json", "aggregator/main.py"):
        (job / name).write_text((JOB / name).read_text())
    source = (JOB / "trainer" / "main.py").read_text()
    assert source.count("\n    def train(self) -> None:") == 1
    (job / "trainer" / "main.py").write_text(
        source.replace("\n    def train(self) -> None:", GATE, 1)
    )
    spec = json.loads((JOB / "job.json").read_text())
    spec.update(rounds=3, round_timeout=180, datasets={"default": ["digits-0", "digits-1"]})
    spec.update(min_trainers=2)
    spec["hyperparameters"]["gate"] = str(gate)
    (job / "job.json").write_text(json.dumps(spec))
    return job


def test_process_runs_stream_each_round_while_the_job_is_still_running(tmp_path: Path) -> None:
    gate = tmp_path / "round-1-shown"
    seen: list[int] = []

    def on_round(entry: dict) -> None:
        seen.append(entry["round"])
        if entry["round"] == 1:
            gate.touch()

    result = flame.simulate(
        _gated_job(tmp_path, gate),
        backend="grpc",
        processes=True,
        workdir=tmp_path / "run",
        on_round=on_round,
    )
    assert seen == [h["round"] for h in result.history] == [0, 1, 2, 3]


def test_in_process_runs_hand_every_round_to_on_round_as_it_ends() -> None:
    seen: list[dict] = []
    result = flame.simulate(JOB, overrides={"rounds": 3}, on_round=seen.append)
    assert seen == result.history and [h["round"] for h in seen] == [0, 1, 2, 3]
