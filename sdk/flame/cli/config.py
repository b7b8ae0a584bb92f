"""flamectl's login file: ``$FLAME_CONFIG`` or ``$XDG_CONFIG_HOME/flame/config.yaml`` (0600)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from flame.connect import Security
from flame.errors import ConfigError


class NotLoggedIn(ConfigError):
    """No saved login: run ``flamectl login`` (or ``flamectl up``, which logs in as admin)."""


class Login(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    server: str
    token: str
    ca_file: str | None = None  # the CA the server's certificate is checked against

    def security(self) -> Security:
        try:
            return Security.from_files(self.ca_file)
        except OSError as exc:
            raise ConfigError(f"cannot read the CA file {self.ca_file}: {exc.strerror}") from exc


def config_path() -> Path:
    explicit = os.environ.get("FLAME_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "flame" / "config.yaml"


def save_login(login: Login, path: Path | None = None) -> Path:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(login.model_dump(), fh)
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def load_login(path: Path | None = None) -> Login:
    path = path or config_path()
    if not path.exists():
        raise NotLoggedIn(
            f"not logged in ({path} missing): run `flamectl login --server URL --token T`"
        )
    try:
        return Login.model_validate(yaml.safe_load(path.read_text()) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path} is not a valid flamectl config: {exc}") from exc
