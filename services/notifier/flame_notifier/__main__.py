"""``flame-notifier``: run the notifier until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from flame_notifier.server import serve
from flame_notifier.settings import NotifierSettings
from flame_service.logging import configure_logging


async def _main(settings: NotifierSettings) -> None:
    running = await serve(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()


def main() -> None:
    settings = NotifierSettings()
    configure_logging("notifier", settings.log_level, settings.log_json)
    asyncio.run(_main(settings))


if __name__ == "__main__":
    main()
