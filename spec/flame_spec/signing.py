"""Data-plane keys: every task of a job gets its own Ed25519 key, and learns its peers' public
keys, so a receiver knows which task of which job sent a message (``flame.channels.auth``
signs and checks).

Keys are derived, not stored: ``seed = HKDF-SHA256(secret, info = job id, task id)``. The
control plane keeps one secret and derives a task's key when it hands the task its config (at
launch or when the node fetches it), so a restarted task gets the same key, the store holds no
private keys, and nobody without the secret can compute one. A local simulation draws a random
secret per run.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from flame_spec.task import SigningSettings, TaskConfig

SECRET_BYTES = 32
_SALT = b"flame/data-plane-keys/v1"


def task_seed(secret: bytes, job_id: str, task_id: str) -> bytes:
    """The 32-byte Ed25519 seed of one task of one job."""
    if len(secret) < SECRET_BYTES:
        raise ValueError(f"the data-plane secret must be at least {SECRET_BYTES} bytes")
    info = b"\0".join((job_id.encode(), task_id.encode()))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(secret)


def public_key(seed: bytes) -> str:
    """The base64 public key that goes with ``seed``."""
    raw = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


class JobKeys:
    """The keys of one job's tasks, derived from ``secret`` (public keys cached: an aggregator
    with many trainers needs each of theirs once)."""

    def __init__(self, secret: bytes, job_id: str) -> None:
        task_seed(secret, job_id, "")  # refuse a short secret at once
        self._secret, self.job_id = secret, job_id
        self._public: dict[str, str] = {}

    def seed(self, task_id: str) -> bytes:
        return task_seed(self._secret, self.job_id, task_id)

    def public(self, task_id: str) -> str:
        if task_id not in self._public:
            self._public[task_id] = public_key(self.seed(task_id))
        return self._public[task_id]


def with_keys(config: TaskConfig, keys: JobKeys) -> TaskConfig:
    """``config`` with its task's private key and every peer's public key."""
    if keys.job_id != config.job_id:
        raise ValueError(f"keys of job {keys.job_id!r} for a task of job {config.job_id!r}")
    channels = {
        name: m.model_copy(
            update={
                "peers": [
                    p.model_copy(update={"public_key": keys.public(p.task_id)}) for p in m.peers
                ]
            }
        )
        for name, m in config.channels.items()
    }
    signing = SigningSettings(private_key=base64.b64encode(keys.seed(config.task_id)).decode())
    return config.model_copy(update={"channels": channels, "signing": signing})
