"""A role's compute resources in the design: optional, Kubernetes quantities, strict, and a
request never above its limit; bad ones are refused naming the field."""

from __future__ import annotations

import pytest

from flame_spec import SpecError, dump, parse_design


def design(resources: object) -> dict[str, object]:
    return {
        "roles": [
            {"name": "trainer", "isDataConsumer": True},
            {"name": "aggregator", "resources": resources},
        ]
    }


def test_a_design_without_resources_is_unchanged() -> None:
    plain = {"roles": [{"name": "trainer", "isDataConsumer": True}, {"name": "aggregator"}]}
    parsed = parse_design(plain)
    assert parsed.role("aggregator").resources is None
    assert "resources" not in dump(parsed)["roles"][1]  # stored designs read back the same


@pytest.mark.parametrize(
    "resources",
    [
        {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        {"requests": {"cpu": "0.25"}},
        {"limits": {"memory": "1500M"}},
        {"requests": {"cpu": "1", "memory": "1G"}, "limits": {"cpu": "1000m", "memory": "1G"}},
    ],
)
def test_good_resources_are_kept_as_kubernetes_quantities(resources: dict[str, object]) -> None:
    role = parse_design(design(resources)).role("aggregator")
    assert role.resources is not None
    assert role.resources.as_kubernetes() == resources


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"requests": {"memory": "512m"}}, "did you mean '512Mi'"),
        ({"requests": {"cpu": "-1"}}, "is not a quantity"),
        ({"requests": {"cpu": "0"}}, "must be more than 0"),
        ({"requests": {"cpu": "1.5m"}}, "millicores are whole numbers"),
        ({"requests": {"cpu": "0.0001"}}, "is not a quantity"),
        ({"requests": {"cpu": 2}}, "valid string"),
        ({"requests": {"memory": "1 Gi"}}, "is not a quantity"),
        ({"requests": {"gpu": "1"}}, "Extra inputs are not permitted"),
        ({"requests": {"cpu": "3"}, "limits": {"cpu": "2"}}, "more than its limit"),
        ({"requests": {"memory": "2Gi"}, "limits": {"memory": "1G"}}, "more than its limit"),
        ({"reqests": {"cpu": "1"}}, "Extra inputs"),
    ],
)
def test_bad_resources_are_refused_naming_the_field(
    resources: dict[str, object], message: str
) -> None:
    with pytest.raises(SpecError, match=r"roles\.1\.resources") as err:
        parse_design(design(resources))
    assert message in str(err.value)
