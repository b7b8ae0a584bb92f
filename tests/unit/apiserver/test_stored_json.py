"""Stored JSON (job specs, design schemas) reads back as ``json.loads`` reads it, whichever parser
the apiserver uses."""

from __future__ import annotations

import json

import pytest

from flame_apiserver.models import Job
from flame_proto.v1 import control_pb2

TEXTS = [
    '{"rounds": 20, "big": 123456789012345678901234567890, "f": 0.1, "neg": -0.0}',
    '{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1e400}',
    '{"name": "\\ud83d\\ude00", "lone": "\\ud800x", "dup": 1, "dup": 2}',
    '{"nested": {"list": [1, "x", null, true, {"k": []}]}}',
    "[1, 2]",  # not an object: read as {}
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_a_stored_spec_reads_back_as_json_loads_reads_it(text: str) -> None:
    job = Job.from_pb(control_pb2.Job(id="j-1", spec_json=text))
    expected = json.loads(text) if text else {}
    assert repr(job.spec) == repr(expected if isinstance(expected, dict) else {})
