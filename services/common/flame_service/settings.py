"""Settings come only from pydantic-settings (env ``FLAME_*``)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from flame_service.connect import Security


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclass per service with its own ``env_prefix``."""

    model_config = SettingsConfigDict(env_prefix="FLAME_", extra="ignore")

    log_level: str = "info"
    log_json: bool = True
    tls_cert: str | None = None  # PEM paths; the security-hardening issue turns TLS on by default
    tls_key: str | None = None
    tls_ca: str | None = None

    def security(self) -> Security:
        """How this service connects and listens (:mod:`flame_service.connect`)."""
        return Security.from_files(self.tls_ca, self.tls_cert, self.tls_key)
