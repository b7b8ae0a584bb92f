"""Controller settings (env ``FLAME_CONTROLLER_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from flame_service.settings import ServiceSettings


class ControllerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLAME_CONTROLLER_", extra="ignore")

    data_dir: Path = Path("~/.local/share/flame")
    store_uri: str = ""  # default: sqlite:///<data_dir>/flame.db
    listen: str = "127.0.0.1:10102"
    notifier_address: str = "127.0.0.1:10101"
    apiserver_url: str = "http://127.0.0.1:10100"  # written into task configs for discovery
    # The MLflow server jobs log to unless their spec names another (flamectl up: its own)
    tracking_uri: str | None = None
    # The bootstrap admin's token: from a file (never the environment, which tasks of the same
    # user could read); generated into <data_dir>/admin.token (mode 0600) when neither is set.
    admin_token_file: Path | None = None
    admin_token: str | None = None  # programmatic (tests); prefer admin_token_file
    run_reconciler: bool = True  # off in tests that drive the domain only
    deployer: Literal["local", "none"] = "local"  # who runs the roles that own no data

    @model_validator(mode="after")
    def _defaults(self) -> ControllerSettings:
        self.data_dir = self.data_dir.expanduser()
        if not self.store_uri:
            self.store_uri = f"sqlite:///{self.data_dir / 'flame.db'}"
        return self

    def bootstrap_token(self) -> str | None:
        if self.admin_token_file is not None:
            return self.admin_token_file.read_text().strip() or None
        return self.admin_token

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"
