"""The task config: everything one task needs, written by the control plane or ``flame.simulate``.

The control plane writes one :class:`TaskConfig` per task as JSON (``FLAME_TASK_CONFIG`` points at
it). The job builder (:mod:`flame_spec.plan`) makes it; whoever then runs the task fills in only
what is local to where it runs, through :meth:`TaskConfig.localized` (work dir, checkpoint dir,
the task's credential, the node-local dataset path).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Literal

from pydantic import Field

from flame_spec.design import Backend, DesignSchema
from flame_spec.errors import SpecError
from flame_spec.job import JobSpec
from flame_spec.types import SpecModel


class PeerRef(SpecModel):
    task_id: str
    role: str
    # The most training samples an update from this peer may claim: what the data owners
    # registered for the datasets below it (0: not known, no bound). Set for peers that send
    # updates up to this task (trainers, middle aggregators, hybrid group leaders).
    max_samples: int = Field(default=0, ge=0)
    # Its Ed25519 public key (base64, 32 bytes): messages claiming to be from it must carry its
    # signature. Empty: the job issued no keys (an in-process simulation).
    public_key: str = ""


class ChannelMembership(SpecModel):
    """This task's view of one channel: its group and the other ends it talks to."""

    name: str
    group: str
    backend: Backend
    peers: list[PeerRef] = Field(default_factory=list)
    func_tags: list[str] = Field(default_factory=list)


class DatasetRef(SpecModel):
    id: str
    name: str
    uri: str = ""  # node-local path; filled in on the node only
    format: str = ""


class MqttSettings(SpecModel):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    topic_prefix: str = "flame"


class TlsSettings(SpecModel):
    """The TLS material of one task (PEM text; the config file is private to the task): the CA
    it trusts for every connection it opens (control plane, peers, broker) and its own
    certificate, which proves to its peers which task of which job it is. None: plaintext."""

    ca_pem: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None

    def __repr__(self) -> str:  # never print key material
        return f"TlsSettings(ca={self.ca_pem is not None}, cert={self.cert_pem is not None})"


class SigningSettings(SpecModel):
    """This task's Ed25519 private key (base64 of its 32-byte seed), with which it signs every
    data-plane message; its peers' public keys are on their :class:`PeerRef`. None: unsigned."""

    private_key: str | None = None

    def __repr__(self) -> str:  # never print key material
        return f"SigningSettings(key={self.private_key is not None})"


class TrackingAccess(SpecModel):
    """Where and as whom a job logs on a tracking server with accounts (the control plane's):
    the experiment and registered model the controller made for the job, and the job's own
    account, which may write only those. The password is added when the task gets its config.
    Nothing set: the names the SDK derives from the job, and no account."""

    experiment: str | None = None
    model_name: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print the password
        return f"TrackingAccess(experiment={self.experiment!r}, username={self.username!r})"


class DiscoverySettings(SpecModel):
    """How grpc-backend tasks find each other's endpoints."""

    kind: Literal["static", "control-plane"] = "static"
    endpoints: dict[str, str] = Field(default_factory=dict)  # static: task id -> host:port
    url: str | None = None  # control-plane: apiserver base URL
    token: str | None = None  # control-plane: node/task credential
    bind_host: str = "127.0.0.1"
    advertise_host: str | None = None


class TaskConfig(SpecModel):
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
    tls: TlsSettings = Field(default_factory=TlsSettings)
    signing: SigningSettings = Field(default_factory=SigningSettings)
    workdir: str = "."
    checkpoint_dir: str | None = None
    # The MLflow server this task logs to (only the top aggregator logs). None: a local store
    # in the task's work dir (simulation). Decided once by whoever builds the config.
    tracking_uri: str | None = None
    tracking: TrackingAccess = Field(default_factory=TrackingAccess)

    @classmethod
    def parse(cls, text: str | bytes) -> TaskConfig:
        """A config from its JSON; :class:`SpecError` names what is wrong."""
        from pydantic import ValidationError

        try:
            return cls.model_validate_json(text, strict=False)
        except ValidationError as exc:
            raise SpecError.of("task config", exc) from None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=1)

    def sample_limits(self, channel: str) -> dict[str, int]:
        """Peer task id -> the most samples its updates may claim, for peers with a bound."""
        membership = self.channels.get(channel)
        if membership is None:
            return {}
        return {p.task_id: p.max_samples for p in membership.peers if p.max_samples > 0}

    def peers(self, channel: str, role: str | None = None) -> list[str]:
        """Task ids at the other end(s) of ``channel`` (optionally only those playing ``role``)."""
        membership = self.channels.get(channel)
        if membership is None:
            raise SpecError("task config", [("channels", f"not on channel {channel!r}")])
        return [p.task_id for p in membership.peers if role is None or p.role == role]

    def localized(
        self,
        *,
        workdir: str | PurePath | None = None,
        checkpoint_dir: str | PurePath | None = None,
        token: str | None = None,
        dataset_uri: str | None = None,
    ) -> TaskConfig:
        """This config as it runs in one place: its work dir, checkpoint dir, the credential it
        uses against the control plane, and (data consumers) where its dataset is on the node."""
        update: dict[str, object] = {}
        if workdir is not None:
            update["workdir"] = str(workdir)
        if checkpoint_dir is not None:
            update["checkpoint_dir"] = str(checkpoint_dir)
        if token is not None:
            update["discovery"] = self.discovery.model_copy(update={"token": token})
        if dataset_uri is not None:
            if self.dataset is None:
                raise SpecError("task config", [("dataset", "this task consumes no dataset")])
            update["dataset"] = self.dataset.model_copy(update={"uri": dataset_uri})
        return self.model_copy(update=update)
