"""An MLflow pyfunc model folder for a Flame global model, written without importing MLflow.

The folder is what ``mlflow.pyfunc.save_model(python_model=<file>, artifacts=...)`` would write
for a models-from-code model: ``MLmodel`` (loader ``mlflow.pyfunc.loaders.code_model``, the
entry file :mod:`flame.serving.weights_model` beside it), the artifacts under ``artifacts/``,
the environment files, and with a :class:`~flame.serving.model_card.ModelCard` a tensor
signature and an input example. Loading it (``mlflow.pyfunc.load_model``,
``mlflow models serve``) is MLflow's as usual; only writing it no longer needs MLflow in the
aggregator (issue 21: MLflow's imports were most of what tracking cost a job).
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ENTRY = Path(__file__).parent / "weights_model.py"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _pinned(package: str) -> str:
    """``package==<installed version>``, or the bare name when it is not installed."""
    version = _version(package)
    return f"{package}=={version}" if version else package


def _tensor_spec(example: np.ndarray) -> str:
    """MLflow's schema of a batch of ``example``-like tensors (any number of rows)."""
    shape = [-1, *example.shape[1:]]
    return json.dumps(
        [{"type": "tensor", "tensor-spec": {"dtype": example.dtype.name, "shape": shape}}]
    )


def write_pyfunc_folder(
    dest: Path,
    artifacts: dict[str, Path],
    *,
    requirements: list[str],
    model_metadata: dict[str, Any],
    input_example: np.ndarray | None = None,
    output_example: np.ndarray | None = None,
) -> None:
    """Write the model folder ``dest`` (made here): ``artifacts`` (name -> a file or folder)
    are copied under ``dest/artifacts``."""
    dest.mkdir(parents=True)
    shutil.copyfile(ENTRY, dest / ENTRY.name)
    (dest / "artifacts").mkdir()
    saved: dict[str, dict[str, str]] = {}
    for name, src in artifacts.items():
        target = dest / "artifacts" / src.name
        if src.is_dir():
            shutil.copytree(src, target)
        else:
            shutil.copyfile(src, target)
        saved[name] = {"path": f"artifacts/{src.name}"}
    python = ".".join(map(str, sys.version_info[:3]))
    (dest / "requirements.txt").write_text("\n".join(requirements))
    build = [_pinned("pip"), _pinned("setuptools")]
    (dest / "python_env.yaml").write_text(
        yaml.safe_dump(
            {
                "python": python,
                "build_dependencies": [*build, "wheel"],
                "dependencies": ["-r requirements.txt"],
            },
            sort_keys=False,
        )
    )
    (dest / "conda.yaml").write_text(
        yaml.safe_dump(
            {
                "channels": ["conda-forge"],
                "dependencies": [f"python={python}", "pip", {"pip": requirements}],
                "name": "mlflow-env",
            },
            sort_keys=False,
        )
    )
    model: dict[str, Any] = {
        "flavors": {
            "python_function": {
                "artifacts": saved,
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": "mlflow.pyfunc.loaders.code_model",
                "model_code_path": ENTRY.name,
                "python_version": python,
                "streamable": False,
            }
        },
        "metadata": model_metadata,
        "mlflow_version": _version("mlflow") or _version("mlflow-skinny"),
        "model_size_bytes": sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()),
        "model_uuid": uuid.uuid4().hex,
        "utc_time_created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
    }
    if input_example is not None and output_example is not None:
        model["signature"] = {
            "inputs": _tensor_spec(input_example),
            "outputs": _tensor_spec(output_example),
            "params": None,
        }
        (dest / "input_example.json").write_text(json.dumps(input_example.tolist()))
        serving = {"inputs": input_example.tolist()}
        (dest / "serving_input_example.json").write_text(json.dumps(serving, indent=2))
        model["saved_input_example_info"] = {
            "artifact_path": "input_example.json",
            "serving_input_path": "serving_input_example.json",
            "type": "ndarray",
        }
    (dest / "MLmodel").write_text(yaml.safe_dump(model, sort_keys=False))
