"""One e-mail rule, read the same by every engine that reads it: Python's re (the controller),
Rust's regex (pydantic, the apiserver) and the ECMA-262 reading OpenAPI clients give it."""

from __future__ import annotations

import re
from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from flame_spec.types import EMAIL_PATTERN

_APISERVER = TypeAdapter(Annotated[str, Field(pattern=EMAIL_PATTERN)])


def _apiserver_accepts(value: str) -> bool:
    try:
        _APISERVER.validate_python(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("", True),
        ("ada@example.org", True),
        ("ü@例え.jp", True),
        ("a b@c", False),
        ("a@b\n", False),  # Python's $ matches before a final newline; fullmatch does not
        ("a\x1cb@c", False),  # a space to Python's \s only: schemathesis found this one
        ("a\x85b@c", False),
        ("a\u00a0b@c", False),
        ("a@b@c", False),
        ("@b", False),
    ],
)
def test_the_controller_and_the_apiserver_agree(value: str, valid: bool) -> None:
    assert bool(re.fullmatch(EMAIL_PATTERN, value)) is valid
    assert _apiserver_accepts(value) is valid


@given(st.text(max_size=12), st.text(max_size=12))
def test_agreement_on_any_text(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    assert bool(re.fullmatch(EMAIL_PATTERN, value)) is _apiserver_accepts(value)
