"""structlog set-up: JSON lines with contextvars (job_id, task_id, node_id bound once)."""

from __future__ import annotations

import logging
import sys

import structlog

from flame_service.logship import LogShipper


def configure_logging(
    service: str, level: str = "info", json: bool = True, shipper: LogShipper | None = None
) -> None:
    """Log JSON lines to stderr; with ``shipper``, events about a job are also queued for the
    controller's log store (:mod:`flame_service.logship`)."""
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            *([shipper] if shipper is not None else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
