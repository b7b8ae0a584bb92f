"""How a job's model predicts, as logged with it: the role's source files, which class to build,
the hyperparameters ``initialize`` reads, and an input example with the prediction for it.

The registered model (:mod:`flame.serving.weights_model`) rebuilds the role from this card with
:meth:`flame.roles.base.Role.for_prediction`, runs its ``initialize``, loads the safetensors
weights and answers with the role's ``predict``: code and tensors only, nothing unpickled.
"""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger(__name__)

#: Source files shipped with a model: the role folder's Python files, within these bounds.
MAX_FILES = 200
MAX_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class ModelCard:
    code_dir: Path  # the role's folder
    module: str  # the role's file, relative to code_dir
    class_name: str
    hyperparameters: dict[str, Any]
    seed: int
    input_example: np.ndarray
    output_example: np.ndarray

    def write(self, folder: Path) -> tuple[Path, Path]:
        """Copy the role's Python files into ``folder/code`` and the card into
        ``folder/predictor.json``; returns both paths."""
        code = folder / "code"
        files = sorted(p for p in self.code_dir.rglob("*.py") if p.is_file())
        if len(files) > MAX_FILES or sum(p.stat().st_size for p in files) > MAX_BYTES:
            raise ValueError(
                f"{self.code_dir} holds more than {MAX_FILES} Python files or {MAX_BYTES} bytes"
            )
        for src in files:
            dst = code / src.relative_to(self.code_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        card = folder / "predictor.json"
        card.write_text(
            json.dumps(
                {
                    "module": self.module,
                    "class": self.class_name,
                    "hyperparameters": self.hyperparameters,
                    "seed": self.seed,
                }
            )
        )
        return code, card


def describe(role: Any) -> ModelCard | None:
    """The card of a role whose ``initialize`` has built its model, or None (logged) when it
    cannot predict: no input example, or ``predict`` fails on it."""
    cls = type(role)
    try:
        source = Path(inspect.getfile(cls)).resolve()
        example = role.input_example()
        if example is None:
            log.warning(
                "model.no_input_example",
                role=cls.__name__,
                hint="declare input_example(self) in the role to log a model that predicts",
            )
            return None
        example = np.asarray(example)
        output = np.asarray(role.predict(example))
    except Exception as exc:
        log.warning("model.cannot_predict", role=cls.__name__, error=f"{type(exc).__name__}: {exc}")
        return None
    return ModelCard(
        code_dir=source.parent,
        module=source.name,
        class_name=cls.__name__,
        hyperparameters=dict(role.hyperparameters),
        seed=int(role.config.job.seed),
        input_example=example,
        output_example=output,
    )
