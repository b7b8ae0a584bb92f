"""``flame-controller``: run the controller until SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import signal

import structlog

from flame_service.logging import configure_logging
from flame_service.logship import LogShipper

from .server import serve
from .settings import ControllerSettings

log = structlog.get_logger(__name__)


async def run(settings: ControllerSettings, shipper: LogShipper | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await serve(settings, shipper=shipper)
    print(
        f"flame-controller listening on {settings.listen.rsplit(':', 1)[0]}:{running.port}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        log.info("controller.stopping")
        await running.stop()


def main() -> None:
    settings = ControllerSettings()
    shipper = LogShipper() if settings.ship_service_logs else None
    configure_logging("controller", settings.log_level, settings.log_json, shipper)
    asyncio.run(run(settings, shipper))


if __name__ == "__main__":
    main()
