"""Model downloads only ever read plain paths under the model's own folder."""

from __future__ import annotations

import pytest

from flame_apiserver.model_registry import _segment, artifact_root
from flame_apiserver.problems import ApiProblem


@pytest.mark.parametrize(
    ("uri", "root"),
    [
        ("mlflow-artifacts:/1/abc/artifacts/best_model", "1/abc/artifacts/best_model"),
        ("mlflow-artifacts://127.0.0.1:5000/2/x/artifacts", "2/x/artifacts"),
    ],
)
def test_proxy_uris_become_relative_folders(uri: str, root: str) -> None:
    assert artifact_root(uri) == root


@pytest.mark.parametrize(
    ("uri", "status"),
    [
        ("mlflow-artifacts:/1/../../etc", 502),
        ("mlflow-artifacts:/1//x", 502),
        ("mlflow-artifacts:/", 502),
        ("mlflow-artifacts:/1/a\\..\\b", 502),
        ("file:///etc/passwd", 409),
        ("s3://bucket/model", 409),
    ],
)
def test_other_or_climbing_uris_are_refused(uri: str, status: int) -> None:
    with pytest.raises(ApiProblem) as refused:
        artifact_root(uri)
    assert refused.value.status == status


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/etc", "a\\b", "x\x00"])
def test_listed_names_must_be_one_plain_segment(name: str) -> None:
    with pytest.raises(ApiProblem):
        _segment(name)
    assert _segment("MLmodel") == "MLmodel"
