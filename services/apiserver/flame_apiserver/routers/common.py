"""Helpers shared by the routers: pagination and JSON-to-string fields."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query

from flame_apiserver.problems import COMMON_ERRORS, problem_responses
from flame_proto.v1 import common_pb2, control_pb2
from flame_service.auth import MAX_IDEMPOTENCY_KEY_LENGTH


def v1_router(tag: str, *errors: int) -> APIRouter:
    return APIRouter(
        prefix="/v1", tags=[tag], responses=problem_responses(*(errors or COMMON_ERRORS))
    )


async def _page(  # async: FastAPI runs a def dependency in a worker thread
    limit: Annotated[int, Query(ge=0, le=500, description="0 = server default (50)")] = 0,
    page_token: Annotated[str, Query(max_length=1024)] = "",
    project_id: Annotated[str, Query(max_length=256, description="only this project")] = "",
) -> control_pb2.ListRequest:
    return control_pb2.ListRequest(
        page=common_pb2.PageRequest(limit=limit, page_token=page_token), project_id=project_id
    )


PageQuery = Annotated[control_pb2.ListRequest, Depends(_page)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        pattern=r"^[ -~]+$",
        description=(
            "Makes this create safe to retry: a retry with the same key (same caller, same "
            "route, same body) within 24 h returns the first response and creates nothing; "
            "the same key with another body is refused (409 idempotency_key_reused). "
            "Use a fresh random value (e.g. a UUID) per create."
        ),
    ),
]


def dump(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
