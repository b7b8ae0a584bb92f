"""The design: a job template of roles and the channels between them.

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

from typing import Literal

from pydantic import Field, model_validator

from flame_spec.errors import SpecError
from flame_spec.resources import RoleResources
from flame_spec.types import Name, SpecModel

Backend = Literal["inproc", "grpc", "mqtt"]


class GroupBy(SpecModel):
    type: Literal["tag"] = "tag"
    value: list[str] = Field(default_factory=lambda: ["default"], min_length=1)


class ChannelSpec(SpecModel):
    name: Name
    pair: tuple[str, str] = Field(strict=False)  # a JSON array of two role names
    group_by: GroupBy = Field(default_factory=GroupBy, alias="groupBy")
    func_tags: dict[str, list[str]] = Field(default_factory=dict, alias="funcTags")
    backend: Backend = "grpc"

    def other_end(self, role: str) -> str:
        """The role at the other end of this channel from ``role`` (itself for a self-pair)."""
        a, b = self.pair
        return b if role == a else a


class RoleSpec(SpecModel):
    name: Name
    is_data_consumer: bool = Field(default=False, alias="isDataConsumer")
    replica: int = Field(default=1, ge=1, le=1000)
    group_association: list[dict[str, str]] = Field(default_factory=list, alias="groupAssociation")
    # what each task of the role requests and may use where a deployer runs it in a container
    resources: RoleResources | None = None


class DesignSchema(SpecModel):
    roles: list[RoleSpec] = Field(min_length=1, max_length=100)
    channels: list[ChannelSpec] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _consistent(self) -> DesignSchema:
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
        raise SpecError("design", [("roles", f"design has no role {name!r}")])

    def channel(self, name: str) -> ChannelSpec:
        for c in self.channels:
            if c.name == name:
                return c
        raise SpecError("design", [("channels", f"design has no channel {name!r}")])

    @property
    def data_consumers(self) -> list[RoleSpec]:
        return [r for r in self.roles if r.is_data_consumer]
