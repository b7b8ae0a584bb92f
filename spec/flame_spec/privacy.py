"""Nothing phones home: the environment every process Flame starts gets, so that MLflow (and
any library that honours the common opt-outs) sends no telemetry and writes no installation id.
"""

from __future__ import annotations

NO_TELEMETRY: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def without_telemetry(env: dict[str, str]) -> dict[str, str]:
    """``env`` with every opt-out set (values already there are overridden)."""
    return {**env, **NO_TELEMETRY}
