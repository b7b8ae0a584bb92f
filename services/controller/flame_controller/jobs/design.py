"""The controller's copy of the design and job-spec schema.

Services never import the SDK, so this module re-states the schema of ``flame.config``
(``DesignSchema``, ``JobSpec``) with the same field names, aliases and rules.  What the
controller stores and writes into task configs is the *normalized* form
(:func:`design_to_dict`, :func:`job_spec_to_dict`), which ``flame.config.TaskConfig`` accepts
as is; ``tests/unit/controller/test_builder.py`` checks that.

Design JSON (camelCase keys as in the original Flame; snake_case accepted too)::

    {"roles": [{"name": "trainer", "isDataConsumer": true,
                "groupAssociation": [{"param-channel": "default"}]},
               {"name": "aggregator", "replica": 1,
                "groupAssociation": [{"param-channel": "default"}]}],
     "channels": [{"name": "param-channel", "pair": ["trainer", "aggregator"],
                   "groupBy": {"type": "tag", "value": ["default"]},
                   "funcTags": {"trainer": ["fetch", "upload"],
                                "aggregator": ["distribute", "aggregate"]},
                   "backend": "grpc"}]}
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flame_service.errors import InvalidArgument

Backend = Literal["inproc", "grpc", "mqtt"]
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid name (lowercase letters, digits, '-', ≤64)")
    return value


class GroupBy(_Model):
    type: Literal["tag"] = "tag"
    value: list[str] = Field(default_factory=lambda: ["default"], min_length=1)


class ChannelSpec(_Model):
    name: str
    pair: tuple[str, str]
    group_by: GroupBy = Field(default_factory=GroupBy, alias="groupBy")
    func_tags: dict[str, list[str]] = Field(default_factory=dict, alias="funcTags")
    backend: Backend = "grpc"

    _name = field_validator("name")(_check_name)

    def other_end(self, role: str) -> str:
        """The role at the other end of this channel from ``role`` (itself for a self-pair)."""
        a, b = self.pair
        return b if role == a else a


class RoleSpec(_Model):
    name: str
    is_data_consumer: bool = Field(default=False, alias="isDataConsumer")
    replica: int = Field(default=1, ge=1, le=1000)
    group_association: list[dict[str, str]] = Field(default_factory=list, alias="groupAssociation")

    _name = field_validator("name")(_check_name)


class DesignSpec(_Model):
    roles: list[RoleSpec] = Field(min_length=1)
    channels: list[ChannelSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> DesignSpec:
        roles = {r.name for r in self.roles}
        if len(roles) != len(self.roles):
            raise ValueError("role names must be unique")
        chans = {c.name: c for c in self.channels}
        if len(chans) != len(self.channels):
            raise ValueError("channel names must be unique")
        if not any(r.is_data_consumer for r in self.roles):
            raise ValueError("a design needs at least one role with isDataConsumer: true")
        for c in self.channels:
            for end in c.pair:
                if end not in roles:
                    raise ValueError(f"channel {c.name!r} pairs unknown role {end!r}")
            for role in c.func_tags:
                if role not in c.pair:
                    raise ValueError(
                        f"channel {c.name!r} has funcTags for {role!r}, not a pair end"
                    )
        for r in self.roles:
            for assoc in r.group_association:
                for chan, group in assoc.items():
                    if chan not in chans:
                        raise ValueError(
                            f"role {r.name!r} is associated with unknown channel {chan!r}"
                        )
                    if r.name not in chans[chan].pair:
                        raise ValueError(f"role {r.name!r} is not an end of channel {chan!r}")
                    if group not in chans[chan].group_by.value:
                        raise ValueError(
                            f"role {r.name!r}: group {group!r} is not in channel {chan!r} groupBy"
                        )
        return self

    def role(self, name: str) -> RoleSpec:
        for r in self.roles:
            if r.name == name:
                return r
        raise InvalidArgument(f"design has no role {name!r}")

    def channel(self, name: str) -> ChannelSpec:
        for c in self.channels:
            if c.name == name:
                return c
        raise InvalidArgument(f"design has no channel {name!r}")


class OptimizerSpec(_Model):
    name: str = "fedavg"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class SelectorSpec(_Model):
    name: str = "all"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrackingSpec(_Model):
    uri: str | None = None
    experiment: str | None = None
    selection_metric: str = "accuracy"
    mode: Literal["max", "min"] = "max"
    # "register" would shadow BaseModel.register; the JSON key stays "register"
    register_model: bool = Field(default=True, alias="register")


class JobSpecModel(_Model):
    """What a user submits with a design and a code version (mirrors ``flame.config.JobSpec``)."""

    rounds: int = Field(default=10, ge=1, le=100_000)
    datasets: dict[str, list[str]] = Field(default_factory=dict)  # group -> dataset ids/names
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    selector: SelectorSpec = Field(default_factory=SelectorSpec)
    min_trainers: int = Field(default=1, ge=1)
    max_run_time: float = Field(default=3600.0, gt=0)  # seconds
    round_timeout: float = Field(default=60.0, gt=0)  # seconds an aggregator waits per round
    backend: Backend | None = None  # overrides every channel's backend when set
    seed: int = 0
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)


def _explain(what: str, exc: ValidationError) -> InvalidArgument:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return InvalidArgument(f"invalid {what}: " + "; ".join(parts))


def parse_design(schema: dict[str, Any]) -> DesignSpec:
    """Validate a design schema; :class:`InvalidArgument` says what is wrong and where."""
    if not isinstance(schema, dict):
        raise InvalidArgument("invalid design: the schema must be a JSON object")
    try:
        return DesignSpec.model_validate(schema)
    except ValidationError as exc:
        raise _explain("design", exc) from None


def parse_job_spec(spec: dict[str, Any]) -> JobSpecModel:
    """Validate a job spec; :class:`InvalidArgument` says what is wrong and where."""
    if not isinstance(spec, dict):
        raise InvalidArgument("invalid job spec: the spec must be a JSON object")
    try:
        return JobSpecModel.model_validate(spec)
    except ValidationError as exc:
        raise _explain("job spec", exc) from None


def design_to_dict(design: DesignSpec) -> dict[str, Any]:
    """The normalized design (camelCase aliases, defaults filled in), JSON-safe."""
    return design.model_dump(mode="json", by_alias=True)


def job_spec_to_dict(spec: JobSpecModel) -> dict[str, Any]:
    """The normalized job spec (defaults filled in), JSON-safe."""
    return spec.model_dump(mode="json", by_alias=True)
