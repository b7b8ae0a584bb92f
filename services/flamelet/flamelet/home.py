"""What the flamelet keeps in its home folder: identity and local datasets (mode 0600)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from flame_service.connect import PLAINTEXT, Security
from flame_service.files import write_private
from flamelet.errors import FlameletError, NotEnrolled

IDENTITY_FILE = "identity.json"
DATASETS_FILE = "datasets.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Identity(_Frozen):
    server: str
    node_id: str
    credential: str
    notifier: str
    # The CA this node trusts for the apiserver and the notifier (PEM; given at enrolment).
    # None: the system's trust store for https, plaintext gRPC to a plaintext notifier.
    ca_pem: str | None = None

    def security(self) -> Security:
        return Security(ca=self.ca_pem.encode()) if self.ca_pem else PLAINTEXT

    def save(self, home: Path) -> None:
        write_private(home / IDENTITY_FILE, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, home: Path) -> Identity:
        path = home / IDENTITY_FILE
        try:
            return cls.model_validate_json(path.read_text())
        except FileNotFoundError as exc:
            raise NotEnrolled(f"no node identity in {home}; run `flamelet login` first") from exc
        except (OSError, ValidationError) as exc:
            raise FlameletError(f"cannot read {path}: {exc}") from exc


class LocalDataset(_Frozen):
    name: str
    path: str  # an absolute path, or a URI the task reads; never leaves the node
    format: str = ""
    realm: str = ""
    id: str = ""  # the dataset id the control plane gave it
    size_bytes: int = 0
    num_samples: int = 0


class DatasetRegistry:
    """Dataset name -> local path, in ``<home>/datasets.json``."""

    def __init__(self, home: Path) -> None:
        self._path = home / DATASETS_FILE

    def all(self) -> dict[str, LocalDataset]:
        try:
            raw = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise FlameletError(f"cannot read {self._path}: {exc}") from exc
        return {name: LocalDataset.model_validate(v) for name, v in raw.items()}

    def get(self, name: str) -> LocalDataset | None:
        return self.all().get(name)

    def find(self, name_or_id: str) -> LocalDataset | None:
        for ds in self.all().values():
            if name_or_id in (ds.name, ds.id):
                return ds
        return None

    def add(self, dataset: LocalDataset) -> None:
        items = self.all()
        items[dataset.name] = dataset
        write_private(
            self._path, json.dumps({k: v.model_dump() for k, v in items.items()}, indent=2)
        )


def dataset_size(path: Path) -> int:
    """Bytes of a file, or of every regular file below a folder (links not followed)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total
