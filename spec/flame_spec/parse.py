"""Parse untrusted input into spec models; every failure is a :class:`SpecError` naming fields."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from flame_spec.design import DesignSchema
from flame_spec.errors import SpecError
from flame_spec.job import JobSpec

M = TypeVar("M", bound=BaseModel)
MAX_JSON_CHARS = 1024 * 1024


def load_json(what: str, text: str | bytes) -> Any:
    """JSON text -> data (``NaN``/``Infinity`` parse here; the models refuse them by field)."""
    if len(text) > MAX_JSON_CHARS:
        raise SpecError(what, [("", f"longer than {MAX_JSON_CHARS} characters")])
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise SpecError(what, [("", f"not valid JSON: {exc}")]) from None


def _parse(model: type[M], what: str, value: Any) -> M:
    if isinstance(value, model):
        return value
    if not isinstance(value, dict):
        raise SpecError(what, [("", "must be a JSON object")])
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise SpecError.of(what, exc) from None


def parse_design(value: Any) -> DesignSchema:
    """A design from a JSON object (a dict)."""
    return _parse(DesignSchema, "design", value)


def parse_job_spec(value: Any) -> JobSpec:
    """A job spec from a JSON object (``NaN``/``Infinity`` refused, also nested)."""
    return _parse(JobSpec, "job spec", value)


def parse_design_json(text: str | bytes) -> DesignSchema:
    return parse_design(load_json("design", text))


def parse_job_spec_json(text: str | bytes) -> JobSpec:
    return parse_job_spec(load_json("job spec", text))


def dump(model: BaseModel) -> dict[str, Any]:
    """The normalized, JSON-safe form that is stored and written into task configs (unset
    optional fields left out: they read back as the same model)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)
