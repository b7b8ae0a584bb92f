"""The sink the apiserver and the notifier ship their job events through: the controller's
``AppendServiceLogs`` (see :mod:`flame_service.logship`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flame_proto.v1 import control_pb2
from flame_service.logship import ShippedLine, Sink


def service_logs_request(source: str, lines: Sequence[ShippedLine]) -> Any:
    req = control_pb2.AppendServiceLogsRequest(source=source)
    for line in lines:
        msg = req.lines.add(
            job_id=line.job_id,
            task_id=line.task_id,
            node_id=line.node_id,
            level=line.level,
            line=line.line,
            source=source,
            stream="service",
        )
        msg.at.FromDatetime(line.at)
    return req


def controller_sink(stub: Callable[[], Any], source: str, timeout: float) -> Sink:
    """``stub()`` gives the ControlPlane stub (opened lazily, on the serving loop)."""

    async def ship(lines: Sequence[ShippedLine]) -> None:
        await stub().AppendServiceLogs(service_logs_request(source, lines), timeout=timeout)

    return ship
