"""Packaging: the built wheels alone, in a fresh venv with no repo on the path.

`pip install flame-sdk` (with its flame-spec and flame-proto wheels) simulates a job; adding the
`[server]` extra and the service wheels brings what `flamectl up` starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("proto", "spec", "sdk")
SERVICES = (
    "services/common",
    "services/controller",
    "services/apiserver",
    "services/notifier",
    "services/flamelet",
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # builds wheels, installs mlflow
# Without byte-compiling every installed module (mlflow's thousands of files were most of this
# test's time on a slow machine): what the two runs import is compiled as they import it.
PIP_INSTALL = ("-q", "--no-compile")


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1200, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, (
        f"{argv}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    )
    return proc


def _wheels(dist: Path, folders: tuple[str, ...]) -> dict[str, Path]:
    """Build each folder's wheel (one pip call: one isolated build environment to set up)."""
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist)]
        + [str(ROOT / f) for f in folders]
    )
    names = {
        tomllib.loads((ROOT / f / "pyproject.toml").read_text())["project"]["name"]: f
        for f in folders
    }
    built = {}
    for wheel in dist.glob("*.whl"):
        name = wheel.name.split("-")[0].replace("_", "-")
        built[names[name]] = wheel
    assert set(built) == set(folders), built
    return built


def _clean_env(home: Path, venv: Path) -> dict[str, str]:
    """No variable of this test session's Flame, MLflow or venv; the new venv first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLAME_", "FLAMELET_", "MLFLOW_", "XDG_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return env


def test_the_wheels_alone_simulate_and_the_server_extra_runs_a_stack(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    wheels = _wheels(dist, (*LIBRARIES, *SERVICES))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python, pip = venv / "bin" / "python", venv / "bin" / "pip"
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"  # no repo here: the job folder is a copy
    work.mkdir()
    shutil.copytree(ROOT / "examples" / "stragglers", work / "stragglers")
    env = _clean_env(home, venv)

    # 1. the sdk wheel alone: no service package, no full mlflow, no torch, no scikit-learn
    _run(
        [str(pip), "install", *PIP_INSTALL, *(str(wheels[f]) for f in LIBRARIES)], env=env, cwd=work
    )
    installed = _run([str(pip), "list", "--format=json"], env=env, cwd=work).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert {"flame-sdk", "flame-spec", "flame-proto", "mlflow-skinny"} <= names
    assert not names & {"flame-controller", "flame-apiserver", "flamelet", "mlflow", "torch"}

    script = (
        "import json, flame\n"
        "r = flame.simulate('stragglers', overrides={'rounds': 2})\n"
        "print(json.dumps({'file': flame.__file__, 'rounds': [h['round'] for h in r.history],"
        " 'loss': r.history[-1]['server/loss']}))\n"
    )
    out = _run([str(python), "-c", script], env=env, cwd=work).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["file"].startswith(str(venv)), result  # the installed wheel, not the repo
    assert result["rounds"] == [0, 1, 2]  # the initial evaluation, then each round
    assert result["loss"] > 0

    # 2. the [server] extra (service wheels from this repo): `flamectl up` starts the stack
    extra = f"{wheels['sdk']}[server]"
    services = [str(wheels[f]) for f in SERVICES]
    _run([str(pip), "install", *PIP_INSTALL, extra, *services], env=env, cwd=work)
    flamectl = venv / "bin" / "flamectl"
    stack_home = home / "stack"
    try:
        up = _run(
            [str(flamectl), "up", "--home", str(stack_home), "--nodes", "1", "--timeout", "300"],
            env=env,
            cwd=work,
        )
        assert "flamectl is logged in" in up.stdout, up.stdout
        for service in ("controller", "notifier", "api", "MLflow"):
            assert service in up.stderr, up.stderr
        nodes = _run([str(flamectl), "node", "list", "-o", "json"], env=env, cwd=work).stdout
        assert [n["name"] for n in json.loads(nodes)] == ["node-0"], nodes
    finally:
        down = subprocess.run(
            [str(flamectl), "down", "--home", str(stack_home)],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert down.returncode == 0, down.stderr
    assert "stopped:" in down.stdout
