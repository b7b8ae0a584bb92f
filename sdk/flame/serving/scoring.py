"""An HTTP inference endpoint for a downloaded Flame model: MLflow's own scoring server
(``mlflow models serve --env-manager local``: the model runs in this Python environment, nothing
is installed), with telemetry off. ``POST /invocations`` with ``{"inputs": [[...], ...]}``
answers ``{"predictions": ...}``; ``GET /ping`` says it is up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from flame_spec.privacy import NO_TELEMETRY


class ScoringError(RuntimeError):
    pass


def start(model_dir: Path, *, host: str = "127.0.0.1", port: int = 5001) -> subprocess.Popen[bytes]:
    """Start the scoring server for the pyfunc folder ``model_dir`` (one worker)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    argv = [str(mlflow) if mlflow.exists() else "mlflow", "models", "serve"]
    argv += ["-m", str(model_dir), "--env-manager", "local", "--host", host, "--port", str(port)]
    argv += ["--workers", "1"]
    # MLflow starts ``uvicorn`` by name: this environment's comes first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, **NO_TELEMETRY, "PATH": path}
    # its request log goes to stderr: stdout stays for what the caller prints
    return subprocess.Popen(argv, env=env, stdout=2, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    """Return once ``url/ping`` answers 200; raise if the server exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ScoringError(f"the scoring server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/ping", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ScoringError(f"the scoring server did not answer at {url} within {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Stop the server and its workers (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 15)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
