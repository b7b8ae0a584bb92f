"""A listing built from each item's kept JSON is byte for byte the body FastAPI writes for the
route's ``response_model``, and an item whose message changed is rendered again."""

from __future__ import annotations

import json
from datetime import UTC

from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import TypeAdapter

from flame_apiserver.models import Items, Job, Metric, Metrics, Page, Task
from flame_apiserver.rendered import Rendered, json_response, metrics_response
from flame_proto.v1 import common_pb2, control_pb2


def _at(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def _job(i: int, state: str = "running") -> control_pb2.Job:
    job = control_pb2.Job(
        id=f"job-{i}",
        name=f"étude-{i}",  # non-ASCII text goes out as UTF-8, as pydantic writes it
        owner="alice",
        design_id="d",
        code_version=3,
        spec_json=json.dumps({"rounds": i, "note": 'ü "quoted" \n', "lr": 0.1}),
        state=state,
        desired_state="running",
        reason="",
        version=i,
        created_at=_at(1_700_000_000 + i, 123_000_000),
        transitions=[
            common_pb2.Transition(
                from_state="ready", to_state=state, reason="started", at=_at(1_700_000_100)
            )
        ],
    )
    if i % 2:
        job.deadline.CopyFrom(_at(1_800_000_000))
    return job


def _fastapi_body(items: list[control_pb2.Job], token: str) -> bytes:
    page = Page[Job](items=[Job.from_pb(j) for j in items], next_page_token=token)
    return TypeAdapter(Page[Job]).dump_json(page, by_alias=True)


def test_a_page_is_the_body_fastapi_writes() -> None:
    jobs = Rendered(Job)
    items = [_job(i) for i in range(5)]
    for token in ("", "MjAyNi0xMi0wN3xqb2ItNA"):
        resp = json_response(jobs, items, next_page_token=token)
        assert resp.body == _fastapi_body(items, token)
        assert resp.media_type == "application/json"
    assert json_response(jobs, [], next_page_token="").body == _fastapi_body([], "")


def test_items_of_tasks_are_the_body_fastapi_writes() -> None:
    tasks = [
        control_pb2.Task(id=f"t{i}", job_id="job-1", role="trainer", index=i, groups={"p": "g"})
        for i in range(3)
    ]
    expected = TypeAdapter(Items[Task]).dump_json(
        Items[Task](items=[Task.from_pb(t) for t in tasks]), by_alias=True
    )
    assert json_response(Rendered(Task), tasks).body == expected


def test_an_item_is_rendered_once_until_its_message_changes() -> None:
    jobs = Rendered(Job, size=3)
    first = jobs(_job(1))
    assert jobs(_job(1)) is first  # the same bytes: kept
    moved = jobs(_job(1, state="completed"))
    assert json.loads(moved)["state"] == "completed"
    assert json.loads(first)["state"] == "running"
    for i in range(2, 6):
        jobs(_job(i))
    assert len(jobs) == 3  # bounded
    assert jobs(_job(1)) is not first  # dropped, then rendered again
    assert jobs(_job(1)) == first


def _metrics(n: int) -> control_pb2.MetricsResponse:
    values = [0.1, 1e-05, 1e16, -0.0, 2.5e-300, 123456789.125, 0.9417]
    resp = control_pb2.MetricsResponse(
        run_uri="http://mlflow/#/runs/ü", model_uri="models:/m@best", last_seq=7 * n + 3
    )
    for i in range(n):
        point = resp.metrics.add(key=f"accuracy-{i % 3}", value=values[i % len(values)], step=i)
        if i % 5:  # every fifth without a time
            # before 1970, whole seconds, nanos that are not whole microseconds
            point.at.CopyFrom(_at(-86_401_000 + i * 1_000_003, (i * 123_456_789) % 1_000_000_000))
    return resp


def test_metrics_are_the_body_fastapi_writes() -> None:
    for n in (0, 1, 200):
        resp = _metrics(n)
        reference = Metrics(
            metrics=[
                Metric(
                    key=m.key,
                    value=m.value,
                    step=m.step,
                    at=m.at.ToDatetime(tzinfo=UTC) if m.HasField("at") else None,
                )
                for m in resp.metrics
            ],
            run_uri=resp.run_uri,
            model_uri=resp.model_uri,
            last_seq=resp.last_seq,
        )
        body = metrics_response(resp).body
        assert body == TypeAdapter(Metrics).dump_json(reference, by_alias=True)
        assert len(json.loads(body)["metrics"]) == n
