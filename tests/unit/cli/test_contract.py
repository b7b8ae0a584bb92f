"""flamectl's resource views and the apiserver's response models describe the same JSON."""

from __future__ import annotations

import pytest

from flame.cli import resources as cli
from flame_apiserver import models as api

PAIRS = [
    (api.WhoAmI, cli.WhoAmI),
    (api.User, cli.User),
    (api.TokenSecret, cli.TokenSecret),
    (api.Project, cli.Project),
    (api.Node, cli.Node),
    (api.NodeCreated, cli.NodeCreated),
    (api.Dataset, cli.Dataset),
    (api.Design, cli.Design),
    (api.CodeVersion, cli.CodeVersion),
    (api.Transition, cli.Transition),
    (api.Job, cli.Job),
    (api.Task, cli.Task),
    (api.LogLine, cli.LogLine),
    (api.Logs, cli.Logs),
    (api.Metric, cli.Metric),
    (api.Metrics, cli.Metrics),
    (api.Invitation, cli.Invitation),
    (api.InvitationSecret, cli.InvitationSecret),
    (api.InvitationAccepted, cli.InvitationAccepted),
]


def _json_names(model: type) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


@pytest.mark.parametrize(("server", "client"), PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_every_field_flamectl_reads_is_one_the_server_sends(server, client) -> None:
    assert _json_names(client) <= _json_names(server)


def test_a_job_the_server_renders_reads_back_in_flamectl() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    from flame_proto.v1 import common_pb2, control_pb2

    at = Timestamp(seconds=1_700_000_000)
    job = control_pb2.Job(
        id="j-1", name="digits", design_id="d-1", code_version=2, state="completed",
        spec_json='{"rounds": 3}', transitions=[
            common_pb2.Transition(from_state="running", to_state="completed", reason="done", at=at)
        ], created_at=at,
    )  # fmt: skip
    wire = api.Job.from_pb(job).model_dump_json(by_alias=True)
    seen = cli.Job.model_validate_json(wire)
    assert seen.terminal and seen.spec == {"rounds": 3} and seen.code_version == 2
    assert seen.transitions[0].at == seen.created_at
