"""Compute resources of a role, for the deployers that run roles in containers (Kubernetes).

A design role may say what each of its tasks needs and may use::

    {"name": "aggregator",
     "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                   "limits": {"cpu": "2", "memory": "4Gi"}}}

Amounts are Kubernetes quantities: cpu in cores (``"2"``, ``"0.5"``) or millicores
(``"500m"``); memory in bytes with an optional suffix (``Ki Mi Gi Ti Pi Ei`` or ``k M G T P E``).
A request may not exceed its limit. The local deployer and the flamelets ignore them.
"""

from __future__ import annotations

import re
from decimal import Decimal

from pydantic import Field, field_validator, model_validator

from flame_spec.types import SpecModel

_CPU = re.compile(r"^(?P<num>[0-9]+(\.[0-9]{1,3})?)(?P<milli>m?)$")
_MEMORY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?)(?P<unit>Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def cpu_cores(text: str) -> Decimal:
    """``"500m"`` -> 0.5, ``"2"`` -> 2; ValueError naming the mistake otherwise."""
    match = _CPU.match(text)
    if match is None:
        raise ValueError(
            f"cpu {text!r} is not a quantity: write cores ('2', '0.5') or millicores ('500m')"
        )
    value = Decimal(match["num"])
    if match["milli"]:
        if "." in match["num"]:
            raise ValueError(f"cpu {text!r}: millicores are whole numbers ('500m')")
        value /= 1000
    if value <= 0:
        raise ValueError(f"cpu {text!r} must be more than 0")
    if value != value.quantize(Decimal("0.001")):
        raise ValueError(f"cpu {text!r} is finer than a millicore")
    return value


def memory_bytes(text: str) -> Decimal:
    """``"1Gi"`` -> 1073741824; ValueError naming the mistake otherwise."""
    match = _MEMORY.match(text)
    if match is None:
        hint = ""
        if re.match(r"^[0-9.]+m$", text):
            hint = f" ('m' means thousandths of a byte; did you mean '{text[:-1]}Mi'?)"
        raise ValueError(
            f"memory {text!r} is not a quantity: write bytes with an optional suffix "
            f"('512Mi', '2Gi', '1G'){hint}"
        )
    value = Decimal(match["num"]) * _UNITS[match["unit"]]
    if value < 1:
        raise ValueError(f"memory {text!r} must be at least one byte")
    return value


class ResourceAmounts(SpecModel):
    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str | None) -> str | None:
        if value is not None:
            cpu_cores(value)
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            memory_bytes(value)
        return value

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}


class RoleResources(SpecModel):
    """What each task of a role requests (is scheduled with) and may use at most."""

    requests: ResourceAmounts = Field(default_factory=ResourceAmounts)
    limits: ResourceAmounts = Field(default_factory=ResourceAmounts)

    @model_validator(mode="after")
    def _requests_within_limits(self) -> RoleResources:
        r, lim = self.requests, self.limits
        if r.cpu is not None and lim.cpu is not None and cpu_cores(r.cpu) > cpu_cores(lim.cpu):
            raise ValueError(f"cpu request {r.cpu!r} is more than its limit {lim.cpu!r}")
        if (
            r.memory is not None
            and lim.memory is not None
            and memory_bytes(r.memory) > memory_bytes(lim.memory)
        ):
            raise ValueError(f"memory request {r.memory!r} is more than its limit {lim.memory!r}")
        return self

    def as_kubernetes(self) -> dict[str, dict[str, str]]:
        """The container ``resources`` object (empty parts left out)."""
        out: dict[str, dict[str, str]] = {}
        if self.requests.as_dict():
            out["requests"] = self.requests.as_dict()
        if self.limits.as_dict():
            out["limits"] = self.limits.as_dict()
        return out
