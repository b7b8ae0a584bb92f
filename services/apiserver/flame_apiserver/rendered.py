"""Listings answered from the JSON of each item, kept by the controller's message for it.

A page of 40 jobs was 40 protobuf -> pydantic conversions and a validation of the whole page
on every request, most of the apiserver's own work on a ``GET /v1/jobs``. An item's JSON is a
pure function of its message's bytes, so an unchanged item (a job that did not move since the
last poll) costs a dictionary lookup. The body is byte for byte what FastAPI would have written
for the route's ``response_model``; the tests compare the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, Protocol, TypeVar

from fastapi import Response
from google.protobuf.message import Message
from pydantic import BaseModel
from pydantic_core import to_json

from flame_proto.v1 import control_pb2
from flame_service.lru import Lru
from flame_service.timestamps import to_datetime

DEFAULT_SIZE = 4096  # items kept per model: a few MB at most


class FromPb(Protocol):
    @classmethod
    def from_pb(cls, m: Any) -> BaseModel: ...


M = TypeVar("M", bound=FromPb)


class Rendered(Generic[M]):
    """``model.from_pb(message)`` as JSON, for the last messages rendered (least recently used
    dropped first)."""

    def __init__(self, model: type[M], size: int = DEFAULT_SIZE) -> None:
        self.model = model
        self._items: Lru[bytes, bytes] = Lru(size)

    def __call__(self, message: Message) -> bytes:
        key = message.SerializeToString(deterministic=True)
        found = self._items.get(key)
        if found is not None:
            return found
        item = self.model.from_pb(message)
        out: bytes = item.__pydantic_serializer__.to_json(item)
        self._items.put(key, out)
        return out

    def __len__(self) -> int:
        return len(self._items)


def json_response(rendered: Rendered[Any], messages: Iterable[Message], **fields: str) -> Response:
    """``{"items": [...], **fields}`` (the shape of ``Items`` and ``Page``) as the response."""
    body = b'{"items":[' + b",".join(rendered(m) for m in messages) + b"]"
    for name, value in fields.items():
        body += b',"' + name.encode() + b'":' + to_json(value)
    return Response(body + b"}", media_type="application/json")


def metrics_response(resp: control_pb2.MetricsResponse) -> Response:
    """A job's metrics (every point of the job: thousands for a long one) written by one
    serializer call: no model per point, and no second validation of the whole list. The body
    is the ``Metrics`` model's, byte for byte."""
    points = [
        {
            "key": m.key,
            "value": m.value,
            "step": m.step,
            "at": to_datetime(m.at) if m.HasField("at") else None,
        }
        for m in resp.metrics
    ]
    body = {
        "metrics": points,
        "run_uri": resp.run_uri,
        "model_uri": resp.model_uri,
        "last_seq": resp.last_seq,
    }
    return Response(to_json(body), media_type="application/json")
