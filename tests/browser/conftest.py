"""Chromium (Debian's, never a downloaded one) driven by Playwright, against a real stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

CHROMIUM = os.environ.get("FLAME_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 120_000  # generous: two cores shared with other work
expect.set_options(timeout=WAIT_MS)


# Module scope, not session: Playwright's sync API runs an event loop in the main thread for
# as long as it is open, and every async test after it would fail to start its own.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; `make system`)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class Tab:
    """A page in its own browser context, with every console error and page error kept."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def record(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text} at {msg.location}")


def open_tab(browser: Browser) -> Tab:
    # The stack's apiserver speaks HTTPS with a certificate from the stack's own CA, which
    # Chromium does not know: the context accepts it rather than touching a system trust store.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    tab = Tab(page)
    page.on("console", tab.record)
    page.on("pageerror", lambda exc: tab.errors.append(f"pageerror: {exc}"))
    return tab
