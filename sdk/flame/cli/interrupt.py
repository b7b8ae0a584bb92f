"""Waiting for Ctrl-C in a command that keeps something running (``demo --keep``,
``model serve``)."""

from __future__ import annotations

import signal
import threading


def wait_for_interrupt(stop: threading.Event | None = None) -> None:
    """Block until Ctrl-C / SIGINT / SIGTERM (or ``stop`` is set).

    Both signals get a handler of their own: a process started in the background by a
    non-interactive shell inherits SIGINT as *ignored*, and Python then never turns it into
    KeyboardInterrupt (the demo used to hang there until it was killed)."""
    stop = stop or threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
