"""``flame-apiserver``: serve the REST API with uvicorn."""

from __future__ import annotations

import structlog
import uvicorn

from flame_apiserver.app import create_app
from flame_apiserver.settings import ApiserverSettings
from flame_service.logging import configure_logging
from flame_service.logship import LogShipper


def main() -> None:
    settings = ApiserverSettings()
    shipper = LogShipper()  # its events about jobs also go to the jobs' logs
    configure_logging("apiserver", settings.log_level, settings.log_json, shipper)
    structlog.get_logger(__name__).info(
        "apiserver.starting",
        listen=f"{settings.listen_host}:{settings.port}",
        controller=settings.controller_address,
        tls=bool(settings.tls_cert),
    )
    uvicorn.run(
        create_app(settings, shipper),
        host=settings.listen_host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )


if __name__ == "__main__":
    main()
