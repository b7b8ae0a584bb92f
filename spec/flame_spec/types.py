"""Building blocks every spec model shares: strict numbers, names, JSON values with limits.

Models are frozen, forbid unknown keys and are *strict*: a string never becomes a number, a
number never becomes a boolean, and a float field refuses ``NaN`` and ``±Infinity`` (JSON
``NaN``, ``Infinity`` and ``1e999`` all parse to those). What a job would fail on later is
refused here, at the door.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from flame_spec.errors import FieldProblem

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
# An e-mail address: something@something, without control characters or spaces of any kind.
# Spelled out rather than ``\s``, whose meaning differs between Python's re, Rust's regex
# (pydantic) and ECMA-262 (what OpenAPI clients and schemathesis read): \x1c-\x1f and \x85 are
# spaces to Python only, so one address was valid to one and not to the other.
_ADDRESS_PART = r"[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+"
EMAIL_PATTERN = rf"^({_ADDRESS_PART}@{_ADDRESS_PART})?$"
MAX_JSON_DEPTH = 16
MAX_JSON_ITEMS = 10_000


class SpecModel(BaseModel):
    """Base of every spec model: frozen, strict, no unknown keys, finite floats."""

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, extra="forbid", strict=True, allow_inf_nan=False
    )


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid name (lowercase letters, digits, '-', ≤64)")
    return value


Name = Annotated[str, AfterValidator(_check_name)]


def check_json(value: Any, *, depth: int = 0, budget: list[int] | None = None) -> Any:
    """Accept plain JSON data (objects with string keys, arrays, strings, finite numbers,
    booleans, null) within a depth and size limit; raise ``ValueError`` naming the bad part."""
    budget = budget if budget is not None else [MAX_JSON_ITEMS]
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"more than {MAX_JSON_ITEMS} values")
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return value
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _at(str(i), item, depth, budget)
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"key {key!r} is not a string")
            _at(key, item, depth, budget)
        return value
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def _at(key: str, item: Any, depth: int, budget: list[int]) -> None:
    try:
        check_json(item, depth=depth + 1, budget=budget)
    except FieldProblem as exc:
        raise FieldProblem(f"{key}.{exc.path}", exc.reason) from None
    except ValueError as exc:
        raise FieldProblem(key, str(exc)) from None


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    check_json(value)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]
