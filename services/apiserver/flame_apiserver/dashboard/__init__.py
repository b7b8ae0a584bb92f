"""The web dashboard: static files (HTML, ES modules, CSS) served under ``/dashboard/``.

There is no server-side logic: the page signs in with the user's API token and calls the same
REST API as ``flamectl``, so it shows a user exactly what the API shows them. Nothing is fetched
from outside the apiserver (the Content-Security-Policy forbids it).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
PREFIX = "/dashboard"
SECURITY_HEADERS = {
    b"content-security-policy": (
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        b"form-action 'self'"
    ),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
}


class DashboardFiles(StaticFiles):
    """Static files with a strict Content-Security-Policy and no caching of the page shell."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k not in SECURITY_HEADERS
                ]
                headers += list(SECURITY_HEADERS.items())
                headers.append((b"cache-control", b"no-cache"))
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, secured)


def mount_dashboard(app: FastAPI) -> None:
    @app.get(PREFIX, include_in_schema=False)
    async def dashboard_root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=308)

    app.mount(PREFIX, DashboardFiles(directory=STATIC, html=True), name="dashboard")
