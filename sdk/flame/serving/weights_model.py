"""MLflow models-from-code entry for a Flame global model.

The model is its weights (``weights.safetensors``, never a pickle). ``predict`` uses the job's
``predict(weights, inputs)`` function when the job shipped one (artifact ``predict_py``);
``FlameWeightsModel.weights`` gives the raw tensors either way. Self-contained on purpose: it
needs only numpy, safetensors and mlflow, not the Flame SDK.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import mlflow
import mlflow.models
import mlflow.pyfunc
import numpy as np
from safetensors.numpy import load_file


class FlameWeightsModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    def __init__(self) -> None:
        self.weights: dict[str, np.ndarray] = {}
        self._predict: Callable[[dict[str, np.ndarray], Any], Any] | None = None

    def load_context(self, context: Any) -> None:
        self.weights = dict(load_file(context.artifacts["weights"]))
        source = context.artifacts.get("predict_py")
        if source:
            spec = importlib.util.spec_from_file_location("flame_model_predict", source)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load predict function from {source}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._predict = module.predict

    # No type hints on the inputs: MLflow would otherwise derive a list[...] input schema from them.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if self._predict is None:
            raise NotImplementedError(
                "this Flame model was logged without a predict(weights, inputs) function; "
                "use the weights via unwrap_python_model().weights"
            )
        return self._predict(self.weights, model_input)


mlflow.models.set_model(FlameWeightsModel())
