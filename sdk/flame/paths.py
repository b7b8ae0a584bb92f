"""Where Flame keeps files on this machine: one folder, ``$FLAME_HOME`` (default ``~/.flame``).

    ~/.flame/stack/    what ``flamectl up`` starts: store, logs, secrets, node homes, MLflow
    ~/.flame/runs/     one folder per local run (``flamectl run --local``, ``flame.simulate``
                       with tracking, processes or checkpoints): task folders, results, and the
                       run's MLflow store (``mlflow.db``, ``mlartifacts/``)

Nothing is written to the current directory. flamectl's login is the one exception to this
folder: it follows the XDG convention (``$XDG_CONFIG_HOME/flame/config.yaml``, see
:mod:`flame.cli.config`).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path


def flame_home() -> Path:
    """``$FLAME_HOME``, else ``~/.flame``."""
    explicit = os.environ.get("FLAME_HOME")
    return Path(explicit).expanduser() if explicit else Path.home() / ".flame"


def runs_dir() -> Path:
    return flame_home() / "runs"


def new_run_dir(job_name: str) -> Path:
    """A fresh folder for one local run: ``<runs>/<job>-<YYYYmmdd-HHMMSS>-<4 hex>``."""
    slug = re.sub(r"[^a-z0-9-]+", "-", job_name.lower()).strip("-") or "job"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = root / f"{slug}-{stamp}-{secrets.token_hex(2)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
