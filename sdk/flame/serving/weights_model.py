"""MLflow models-from-code entry for a Flame global model.

The model is its weights (``weights.safetensors``, never a pickle) and, when the job's role can
predict, the role's source files (artifact ``code``) with its card (``predictor.json``: which
class, which hyperparameters). ``predict`` rebuilds the role with
:meth:`flame.roles.base.Role.for_prediction`, runs its ``initialize``, loads the weights and
answers with the role's ``predict``. ``FlameWeightsModel.weights`` gives the raw tensors either
way. The code that runs is this SDK file and the job's own source: nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import mlflow.models
import mlflow.pyfunc
import numpy as np
from safetensors.numpy import load_file


class FlameWeightsModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    def __init__(self) -> None:
        self.weights: dict[str, np.ndarray] = {}
        self.role: Any = None

    def load_context(self, context: Any) -> None:
        self.weights = dict(load_file(context.artifacts["weights"]))
        card_file = context.artifacts.get("predictor")
        if not card_file:
            return
        from flame.roles.loader import load_role_class

        card = json.loads(Path(card_file).read_text())
        main_py = Path(context.artifacts["code"]) / card["module"]
        cls = load_role_class(main_py)
        role = cls.for_prediction(card["hyperparameters"], int(card.get("seed", 0)))
        role.initialize()
        role.load_weights(self.weights)
        self.role = role

    # No type hints on the inputs: MLflow would otherwise derive a list[...] input schema from them.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if self.role is None:
            raise NotImplementedError(
                "this Flame model was logged without a way to predict (its role gave no input "
                "example); use the weights via unwrap_python_model().weights"
            )
        return self.role.predict(np.asarray(model_input))


mlflow.models.set_model(FlameWeightsModel())
