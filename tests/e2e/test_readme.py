"""The README's walkthrough is a script: its marked shell block, run unchanged by bash from the
repository's root for a user with an empty home (so a fresh ~/.flame), must simulate the
example, start the stack with 3 nodes, run the job to completion and leave its best model
registered in the stack's MLflow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flame.cli.stack import Stack

ROOT = Path(__file__).parents[2]
MARKER = "<!-- walkthrough: tests/e2e/test_readme.py runs the next block unchanged -->"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def walkthrough(readme: str) -> str:
    """The first ```bash block after the marker, exactly as written."""
    _, marker, rest = readme.partition(MARKER)
    assert marker, "the README lost its walkthrough marker"
    found = re.search(r"```bash\n(.*?)\n```", rest, re.DOTALL)
    assert found, "no bash block after the walkthrough marker"
    return found.group(1)


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    script = walkthrough((ROOT / "README.md").read_text())
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLAME_", "FLAMELET_", "MLFLOW_", "XDG_"))
    }
    bin_dir = str(Path(sys.executable).parent)  # flamectl and flamelet of this environment
    env.update(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    try:
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        Stack(home / ".flame" / "stack").down()  # whatever the script got to
    output = f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, output
    assert re.search(r"^job \w+ completed", proc.stdout, re.MULTILINE), output
    model = re.search(r"model: models:/(demo-\w{12})@best", proc.stdout)
    assert model, output  # the controller's name for the job's model: tenants never share one

    # the simulation kept its files in one run folder under ~/.flame/runs
    runs = list((home / ".flame" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "mlflow.db").is_file()

    # the model is registered in the stack's MLflow (its store outlives `flamectl down`)
    from mlflow import MlflowClient

    store = f"sqlite:///{home / '.flame' / 'stack' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    best = client.get_model_version_by_alias(model.group(1), "best")
    run = client.get_run(best.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("flame.job_name") == "demo"
    assert run.data.metrics["accuracy"] > 0.9
