"""Typed design, job spec and task config.

The control plane writes one :class:`TaskConfig` per task as JSON (``FLAME_TASK_CONFIG`` points at
it); ``flame.simulate`` builds the same objects in memory. The controller keeps its own copy of
the design/job validation (services never import the SDK); ``tests/contract/test_plan_parity.py``
checks that both expand a job into the same task graph.

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
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flame.errors import ConfigError

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


class RoleSpec(_Model):
    name: str
    is_data_consumer: bool = Field(default=False, alias="isDataConsumer")
    replica: int = Field(default=1, ge=1, le=1000)
    group_association: list[dict[str, str]] = Field(default_factory=list, alias="groupAssociation")

    _name = field_validator("name")(_check_name)


class DesignSchema(_Model):
    roles: list[RoleSpec] = Field(min_length=1)
    channels: list[ChannelSpec] = Field(default_factory=list)

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
        raise ConfigError(f"design has no role {name!r}")

    def channel(self, name: str) -> ChannelSpec:
        for c in self.channels:
            if c.name == name:
                return c
        raise ConfigError(f"design has no channel {name!r}")


class OptimizerSpec(_Model):
    """Server-side aggregation rule: fedavg, fedprox, fedadam, fedyogi, fedadagrad, fedbuff,
    scaffold, trimmed_mean, phocas, median, krum, multi_krum."""

    name: str = "fedavg"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class SelectorSpec(_Model):
    """Trainer selection: all, random, fraction, fedbuff, oort."""

    name: str = "all"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrackingSpec(_Model):
    uri: str | None = None  # default: sqlite:///<workdir>/mlflow.db
    experiment: str | None = None  # default: the job name
    selection_metric: str = "accuracy"
    mode: Literal["max", "min"] = "max"
    register_model: bool = Field(default=True, alias="register")


class JobSpec(_Model):
    """What a user submits next to a design and a code version."""

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


class PeerRef(_Model):
    task_id: str
    role: str


class ChannelMembership(_Model):
    """This task's view of one channel: its group and the other ends it talks to."""

    name: str
    group: str
    backend: Backend
    peers: list[PeerRef] = Field(default_factory=list)
    func_tags: list[str] = Field(default_factory=list)


class DatasetRef(_Model):
    id: str
    name: str
    uri: str  # node-local path; resolved on the node only
    format: str = ""


class MqttSettings(_Model):
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    topic_prefix: str = "flame"


class DiscoverySettings(_Model):
    """How grpc-backend tasks find each other's endpoints."""

    kind: Literal["static", "control-plane"] = "static"
    endpoints: dict[str, str] = Field(default_factory=dict)  # static: task id -> host:port
    url: str | None = None  # control-plane: apiserver base URL
    token: str | None = None  # control-plane: node/task credential
    bind_host: str = "127.0.0.1"
    advertise_host: str | None = None


class TaskConfig(_Model):
    """Everything one task needs; written by the control plane or by ``flame.simulate``."""

    job_id: str
    job_name: str
    task_id: str
    role: str
    index: int = 0
    owner: str = ""
    design_name: str = ""
    design: DesignSchema
    job: JobSpec
    channels: dict[str, ChannelMembership] = Field(default_factory=dict)
    dataset: DatasetRef | None = None
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    workdir: str = "."
    checkpoint_dir: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> TaskConfig:
        try:
            return cls.model_validate_json(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read task config {path}: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"invalid task config {path}: {exc}") from exc

    def peers(self, channel: str, role: str | None = None) -> list[str]:
        """Task ids at the other end(s) of ``channel`` (optionally only those playing ``role``)."""
        membership = self.channels.get(channel)
        if membership is None:
            raise ConfigError(f"task {self.task_id} is not on channel {channel!r}")
        return [p.task_id for p in membership.peers if role is None or p.role == role]
