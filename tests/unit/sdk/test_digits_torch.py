"""The torch digits job against centralized training, through ``examples/digits_central.py``
(the script that prints the comparison is the one under test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).parents[3] / "examples" / "digits_central.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("digits_central", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fedavg_torch_mlp_on_iid_digits_matches_centralized_training() -> None:
    script = load_script()
    fed, central = script.iid_comparison(script.TORCH_JOB, script.MLP)
    assert fed >= central - 0.01, (fed, central)
    assert fed > 0.95
