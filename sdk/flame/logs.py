"""How the SDK's processes log: short and human in a terminal, JSON lines otherwise.

``configure(verbosity)`` sets structlog up once per process: structlog's console renderer when
the stream is a terminal, one JSON object per line when it is a file or a pipe (a task's log
that the flamelet ships, CI output). ``verbosity`` 0 shows warnings and errors only (what a
person at a terminal wants while rounds are printed for them), 1 adds info, 2 debug. The
environment overrides both: ``FLAME_LOG_LEVEL`` (debug, info, warning, error) and
``FLAME_LOG_JSON`` (true / false).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any, TextIO

import structlog

LEVELS = ("warning", "info", "debug")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def level_for(verbosity: int, default: str = "warning") -> int:
    """The logging level for ``-v`` counted ``verbosity`` times (``FLAME_LOG_LEVEL`` wins)."""
    names = logging.getLevelNamesMapping()
    explicit = os.environ.get("FLAME_LOG_LEVEL", "").strip().upper()
    if explicit in names:
        return names[explicit]
    base = LEVELS.index(default) if default in LEVELS else 0
    name = LEVELS[min(base + max(verbosity, 0), len(LEVELS) - 1)]
    return names[name.upper()]


def wants_json(stream: IO[str]) -> bool:
    """JSON unless the stream is a terminal (``FLAME_LOG_JSON`` wins)."""
    explicit = os.environ.get("FLAME_LOG_JSON", "").strip().lower()
    if explicit in _TRUE:
        return True
    if explicit in _FALSE:
        return False
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: machine-readable
        return True


def configure(
    verbosity: int = 0,
    *,
    json: bool | None = None,
    stream: TextIO | None = None,
    default: str = "warning",
) -> None:
    """Configure structlog for this process (see the module docstring)."""
    out = stream or sys.stderr
    as_json = wants_json(out) if json is None else json
    level = level_for(verbosity, default)
    # Libraries that log through the standard library (MLflow sets its own level from this
    # variable when it is imported) stay as quiet as ours.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", logging.getLevelName(level))
    logging.getLogger().setLevel(level)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=_colors(out))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso" if as_json else "%H:%M:%S", utc=as_json),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def _colors(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
