"""``flame-notifier``: run the notifier until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from flame_notifier.server import serve
from flame_notifier.settings import NotifierSettings
from flame_service.logging import configure_logging
from flame_service.logship import LogShipper


async def _main(settings: NotifierSettings, shipper: LogShipper) -> None:
    running = await serve(settings, shipper)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()


def main() -> None:
    settings = NotifierSettings()
    shipper = LogShipper()  # its events about jobs also go to the jobs' logs
    configure_logging("notifier", settings.log_level, settings.log_json, shipper)
    asyncio.run(_main(settings, shipper))


if __name__ == "__main__":
    main()
