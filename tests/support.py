"""Small helpers the test suites share."""

from __future__ import annotations

import secrets
from pathlib import Path


def service_token_file(folder: Path) -> Path:
    """A fresh service credential in a private file, as ``flamectl up`` makes one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "service.token"
    path.touch(mode=0o600)
    path.write_text(secrets.token_urlsafe(32))
    return path
