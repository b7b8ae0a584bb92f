"""Settings every suite shares."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(scope="session", autouse=True)
def _flame_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Local runs and stacks that name no folder go under ``$FLAME_HOME`` (see
    :mod:`flame.paths`): during the tests that is a temporary folder, never the user's."""
    saved = os.environ.get("FLAME_HOME")
    os.environ["FLAME_HOME"] = str(tmp_path_factory.mktemp("flame-home"))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("FLAME_HOME", None)
        else:
            os.environ["FLAME_HOME"] = saved


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A command run through a CLI runner binds logging to that runner's stream, which is
    closed afterwards: every test starts from structlog's defaults again."""
    yield
    structlog.reset_defaults()
