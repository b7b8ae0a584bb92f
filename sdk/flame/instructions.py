"""Per-round, per-trainer instructions: a small typed config the aggregator sends one trainer
with the global model of one round ("you are a straggler: do 3 local epochs").

Who attaches them: a selector that has an ``instruct(chosen, rnd)`` method, or user code that
overrides :meth:`flame.Aggregator.instruct`. A trainer reads its own in ``train()`` as
``self.instructions`` (every field ``None`` when the aggregator said nothing). They travel in
the ``weights`` message's JSON (``meta.instructions``); every trainer gets only its own.

Fields the SDK names: ``local_epochs``, ``local_steps``, ``lr``, ``deadline`` (seconds the trainer
has for this round, counted from when it got the model); anything else small goes in
``params`` (at most :data:`MAX_PARAMS` scalar values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flame.errors import ConfigError

Scalar = bool | int | float | str
MAX_PARAMS = 32
MAX_KEY = 64
MAX_TEXT = 256


def _positive_int(name: str, v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConfigError(f"instructions: {name} {v!r} is not a non-negative integer")
    return v


def _positive_float(name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"instructions: {name} {v!r} is not a positive number")
    return float(v)


def _params(v: Any) -> dict[str, Scalar]:
    if not isinstance(v, Mapping):
        raise ConfigError("instructions: params must be a mapping of names to scalars")
    if len(v) > MAX_PARAMS:
        raise ConfigError(f"instructions: params has {len(v)} entries, at most {MAX_PARAMS}")
    out: dict[str, Scalar] = {}
    for key, value in v.items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY:
            raise ConfigError(f"instructions: param name {key!r} is not a short string")
        ok = isinstance(value, bool | int | str) or (
            isinstance(value, float) and math.isfinite(value)
        )
        if not ok or (isinstance(value, str) and len(value) > MAX_TEXT):
            raise ConfigError(f"instructions: param {key!r} = {value!r} is not a small scalar")
        out[key] = value
    return out


@dataclass(frozen=True)
class Instructions:
    """What one trainer is asked to do in one round; checked when built (:class:`ConfigError`)."""

    local_epochs: int | None = None
    local_steps: int | None = None
    lr: float | None = None
    deadline: float | None = None  # seconds, from when the trainer received the model
    params: dict[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (  # nothing asked (every trainer's every round without instructions): nothing to check
            self.local_epochs is None
            and self.local_steps is None
            and self.lr is None
            and self.deadline is None
            and type(self.params) is dict
            and not self.params
        ):
            return
        object.__setattr__(self, "local_epochs", _positive_int("local_epochs", self.local_epochs))
        object.__setattr__(self, "local_steps", _positive_int("local_steps", self.local_steps))
        object.__setattr__(self, "lr", _positive_float("lr", self.lr))
        object.__setattr__(self, "deadline", _positive_float("deadline", self.deadline))
        object.__setattr__(self, "params", _params(self.params))

    @property
    def empty(self) -> bool:
        return self == Instructions()

    def to_json(self) -> dict[str, Any]:
        """The fields that are set (what goes on the wire)."""
        out: dict[str, Any] = {}
        for name in ("local_epochs", "local_steps", "lr", "deadline"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.params:
            out["params"] = dict(self.params)
        return out

    @classmethod
    def from_json(cls, data: Any) -> Instructions:
        """Instructions from the wire; :class:`ConfigError` says what is wrong."""
        if not isinstance(data, Mapping):
            raise ConfigError("instructions must be a JSON object")
        known = {"local_epochs", "local_steps", "lr", "deadline", "params"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"instructions: unknown field(s) {', '.join(map(str, unknown))}")
        return cls(
            local_epochs=data.get("local_epochs"),
            local_steps=data.get("local_steps"),
            lr=data.get("lr"),
            deadline=data.get("deadline"),
            params=data.get("params", {}),
        )
