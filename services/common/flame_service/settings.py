"""Settings come only from pydantic-settings (env ``FLAME_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flame_service.connect import Security
from flame_service.metrics_endpoint import MetricsEndpointSettings


class ServiceSettings(BaseSettings, MetricsEndpointSettings):
    """Fields every service has. Subclass per service with its own ``env_prefix``; the
    ``metrics_*`` fields (FLAME_<SVC>_METRICS_PORT/HOST/TOKEN_FILE) come from the mixin."""

    model_config = SettingsConfigDict(env_prefix="FLAME_", extra="ignore")

    log_level: str = "info"
    log_json: bool = True
    tls_cert: str | None = None  # PEM paths; the security-hardening issue turns TLS on by default
    tls_key: str | None = None
    tls_ca: str | None = None

    # The service credential the control-plane services authenticate each other with: a file
    # only they can read (``flamectl up`` and the Helm chart make it); env FLAME_SERVICE_TOKEN_FILE.
    service_token_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("service_token_file", "FLAME_SERVICE_TOKEN_FILE"),
    )

    def service_token(self) -> str | None:
        """The service credential, read from its file (None when not configured)."""
        if self.service_token_file is None:
            return None
        token = self.service_token_file.read_text().strip()
        return token or None

    def security(self) -> Security:
        """How this service connects and listens (:mod:`flame_service.connect`)."""
        return Security.from_files(self.tls_ca, self.tls_cert, self.tls_key)
