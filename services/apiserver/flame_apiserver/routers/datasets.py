"""``/v1/datasets``: metadata only; the data never leaves its node."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Response

from flame_apiserver.auth import Ctl, UserCaller
from flame_apiserver.models import CreateDataset, Dataset, Page, UpdateDataset
from flame_apiserver.routers.common import IdempotencyKey, PageQuery, v1_router
from flame_proto.v1 import control_pb2

router = v1_router("datasets")
Id = Annotated[str, Path(min_length=1, max_length=256)]


@router.post("/datasets", status_code=201, response_model=Dataset)
async def create_dataset(
    body: CreateDataset, caller: UserCaller, ctl: Ctl, key: IdempotencyKey = None
) -> Dataset:
    req = control_pb2.CreateDatasetRequest(**body.model_dump())
    return Dataset.from_pb(await ctl.call(ctl.stub.CreateDataset, req, caller, idempotency_key=key))


@router.get("/datasets", response_model=Page[Dataset])
async def list_datasets(page: PageQuery, caller: UserCaller, ctl: Ctl) -> Page[Dataset]:
    resp = await ctl.call(ctl.stub.ListDatasets, page, caller)
    return Page[Dataset](
        items=[Dataset.from_pb(d) for d in resp.items], next_page_token=resp.page.next_page_token
    )


@router.get("/datasets/{id}", response_model=Dataset)
async def get_dataset(id: Id, caller: UserCaller, ctl: Ctl) -> Dataset:
    resp = await ctl.call(ctl.stub.GetDataset, control_pb2.GetRequest(id=id), caller)
    return Dataset.from_pb(resp)


@router.patch("/datasets/{id}", response_model=Dataset)
async def update_dataset(id: Id, body: UpdateDataset, caller: UserCaller, ctl: Ctl) -> Dataset:
    req = control_pb2.UpdateDatasetRequest(id=id)
    if body.description is not None:
        req.description = body.description
    if body.realm is not None:
        req.realm = body.realm
    return Dataset.from_pb(await ctl.call(ctl.stub.UpdateDataset, req, caller))


@router.delete("/datasets/{id}", status_code=204, response_class=Response)
async def delete_dataset(id: Id, caller: UserCaller, ctl: Ctl) -> None:
    await ctl.call(ctl.stub.DeleteDataset, control_pb2.GetRequest(id=id), caller)
