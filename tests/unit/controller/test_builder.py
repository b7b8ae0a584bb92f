"""The job builder expands every topology into the expected task graph with valid configs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flame.config import TaskConfig
from flame_controller.jobs.builder import (
    DatasetInfo,
    PlannedTask,
    build_tasks,
    parse_design,
    parse_job_spec,
)
from flame_service.errors import InvalidArgument
from flame_spec import dump

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "designs"
TOPOLOGIES = ["central", "hierarchical", "hybrid", "asynchronous", "distributed", "coordinated"]


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def build(fx: dict[str, Any], job_id: str = "job-1", **kw: Any) -> list[PlannedTask]:
    datasets = {d["id"]: DatasetInfo(**d) for d in fx["datasets"]}
    return build_tasks(
        job_id=job_id,
        job_name="demo",
        owner="alice",
        design_name="d",
        design=parse_design(fx["design"]),
        spec=parse_job_spec(fx["job"]),
        datasets=datasets,
        **kw,
    )


def graph(tasks: list[PlannedTask]) -> dict[str, dict[str, tuple[str, list[str]]]]:
    """role/index -> channel -> (group, sorted peers as role/index)."""
    by_id = {t.id: f"{t.role}/{t.index}" for t in tasks}
    out: dict[str, dict[str, tuple[str, list[str]]]] = {}
    for t in tasks:
        chans = t.config["channels"]
        out[f"{t.role}/{t.index}"] = {
            c: (m["group"], sorted(by_id[p["task_id"]] for p in m["peers"]))
            for c, m in chans.items()
        }
    return out


T = [f"trainer/{i}" for i in range(4)]
EXPECTED: dict[str, dict[str, dict[str, tuple[str, list[str]]]]] = {
    "central": {
        **{t: {"param-channel": ("default", ["aggregator/0"])} for t in T[:3]},
        "aggregator/0": {"param-channel": ("default", T[:3])},
    },
    "asynchronous": {
        **{t: {"param-channel": ("default", ["aggregator/0"])} for t in T},
        "aggregator/0": {"param-channel": ("default", T)},
    },
    "hierarchical": {
        "trainer/0": {"param-channel": ("g1", ["middle-aggregator/0"])},
        "trainer/1": {"param-channel": ("g1", ["middle-aggregator/0"])},
        "trainer/2": {"param-channel": ("g2", ["middle-aggregator/1"])},
        "trainer/3": {"param-channel": ("g2", ["middle-aggregator/1"])},
        "middle-aggregator/0": {
            "param-channel": ("g1", T[:2]),
            "global-channel": ("default", ["top-aggregator/0"]),
        },
        "middle-aggregator/1": {
            "param-channel": ("g2", T[2:]),
            "global-channel": ("default", ["top-aggregator/0"]),
        },
        "top-aggregator/0": {
            "global-channel": ("default", ["middle-aggregator/0", "middle-aggregator/1"])
        },
    },
    "hybrid": {
        "trainer/0": {
            "peer-channel": ("g1", ["trainer/1"]),
            "param-channel": ("default", ["aggregator/0"]),
        },
        "trainer/1": {
            "peer-channel": ("g1", ["trainer/0"]),
            "param-channel": ("default", ["aggregator/0"]),
        },
        "trainer/2": {
            "peer-channel": ("g2", ["trainer/3"]),
            "param-channel": ("default", ["aggregator/0"]),
        },
        "trainer/3": {
            "peer-channel": ("g2", ["trainer/2"]),
            "param-channel": ("default", ["aggregator/0"]),
        },
        "aggregator/0": {"param-channel": ("default", T)},
    },
    "distributed": {
        "trainer/0": {"param-channel": ("default", ["trainer/1", "trainer/2"])},
        "trainer/1": {"param-channel": ("default", ["trainer/0", "trainer/2"])},
        "trainer/2": {"param-channel": ("default", ["trainer/0", "trainer/1"])},
    },
    "coordinated": {
        "coordinator/0": {
            "trainer-coord-channel": ("default", T),
            "middle-coord-channel": ("default", ["middle-aggregator/0", "middle-aggregator/1"]),
            "top-coord-channel": ("default", ["top-aggregator/0"]),
        },
        **{
            t: {
                "param-channel": ("default", ["middle-aggregator/0", "middle-aggregator/1"]),
                "trainer-coord-channel": ("default", ["coordinator/0"]),
            }
            for t in T
        },
        **{
            m: {
                "param-channel": ("default", T),
                "global-channel": ("default", ["top-aggregator/0"]),
                "middle-coord-channel": ("default", ["coordinator/0"]),
            }
            for m in ["middle-aggregator/0", "middle-aggregator/1"]
        },
        "top-aggregator/0": {
            "global-channel": ("default", ["middle-aggregator/0", "middle-aggregator/1"]),
            "top-coord-channel": ("default", ["coordinator/0"]),
        },
    },
}


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_topology_expands_to_expected_graph(topology: str) -> None:
    tasks = build(load(topology))
    assert graph(tasks) == EXPECTED[topology]
    assert len(tasks) == len(EXPECTED[topology])


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_every_config_is_a_valid_task_config(topology: str) -> None:
    fx = load(topology)
    for task in build(fx, apiserver_url="http://cp:10100"):
        cfg = TaskConfig.model_validate(task.config)
        assert cfg.task_id == task.id
        assert cfg.role == task.role and cfg.index == task.index
        assert cfg.discovery.kind == "control-plane"
        assert cfg.discovery.url == "http://cp:10100"
        assert cfg.job.rounds == fx["job"]["rounds"]
        for name, membership in cfg.channels.items():
            chan = cfg.design.channel(name)
            assert membership.func_tags == chan.func_tags.get(task.role, [])
        # JSON round trip: what the store keeps and the task reads is the same config
        assert TaskConfig.model_validate_json(json.dumps(task.config)) == cfg


def test_data_consumers_are_placed_on_their_dataset_node() -> None:
    fx = load("central")
    tasks = build(fx)
    trainers = [t for t in tasks if t.role == "trainer"]
    # spec mixes ids and names: ["ds-1", "mnist-2", "ds-3"]
    assert [(t.dataset_id, t.node_id) for t in trainers] == [
        ("ds-1", "node-1"),
        ("ds-2", "node-2"),
        ("ds-3", "node-3"),
    ]
    assert all(t.data_consumer for t in trainers)
    assert trainers[1].config["dataset"] == {
        "id": "ds-2",
        "name": "mnist-2",
        "uri": "",
        "format": "csv",
    }
    (agg,) = [t for t in tasks if t.role == "aggregator"]
    assert agg.node_id is None and agg.dataset_id is None and not agg.data_consumer
    assert "dataset" not in agg.config
    assert agg.config["discovery"]["kind"] == "static"


def test_job_backend_overrides_channel_backend() -> None:
    fx = load("hierarchical")
    fx["design"]["channels"][1]["backend"] = "mqtt"
    by_role = {t.role: t for t in build(fx)}
    assert by_role["top-aggregator"].config["channels"]["global-channel"]["backend"] == "mqtt"
    assert by_role["trainer"].config["channels"]["param-channel"]["backend"] == "grpc"
    fx["job"]["backend"] = "inproc"
    for task in build(fx):
        assert {m["backend"] for m in task.config["channels"].values()} == {"inproc"}


def test_replicas_and_roles_without_groups() -> None:
    fx = load("central")
    fx["design"]["roles"].append({"name": "monitor", "replica": 3})
    tasks = build(fx)
    monitors = [t for t in tasks if t.role == "monitor"]
    assert [t.index for t in monitors] == [0, 1, 2]
    assert all(t.groups == {} and t.config["channels"] == {} for t in monitors)


def test_ids_are_stable_unique_and_dns_safe() -> None:
    fx = load("coordinated")
    first = [t.id for t in build(fx)]
    assert first == [t.id for t in build(fx)]
    assert len(set(first)) == len(first)
    assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", i) for i in first)
    assert first != [t.id for t in build(fx, job_id="job-2")]
    # another process (different hash seed) computes the same ids
    code = (
        "import json,sys;from flame_spec import task_id;"
        "print(json.dumps([task_id('job-1', r, int(i)) for r, i in json.loads(sys.argv[1])]))"
    )
    pairs = json.dumps([[t.role, t.index] for t in build(fx)])
    out = subprocess.run(
        [sys.executable, "-c", code, pairs],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert json.loads(out.stdout) == first


def test_long_role_names_still_give_dns_labels() -> None:
    fx = load("central")
    long = "a" * 64
    fx["design"]["roles"][1]["name"] = long
    fx["design"]["channels"][0]["pair"] = ["trainer", long]
    fx["design"]["channels"][0]["funcTags"] = {}
    ids = [t.id for t in build(fx)]
    assert all(len(i) <= 63 for i in ids)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda fx: fx["job"]["datasets"].update({"g9": ["ds-1"]}), "group 'g9'"),
        (lambda fx: fx["job"]["datasets"]["g1"].append("nope"), "unknown dataset 'nope'"),
        (lambda fx: fx["job"]["datasets"]["g2"].append("ds-1"), "dataset 'ds-1' is used twice"),
        (lambda fx: fx["job"].update(datasets={}), "lists no datasets"),
        (lambda fx: fx["job"].update(min_trainers=9), "min_trainers is 9"),
        (
            lambda fx: fx["design"]["roles"][1].update(isDataConsumer=True),
            "2 data-consumer roles",
        ),
        (
            lambda fx: fx["design"]["roles"][1]["groupAssociation"].pop(),
            "no 'middle-aggregator' task is",
        ),
    ],
)
def test_bad_jobs_are_rejected_with_clear_errors(mutate: Any, message: str) -> None:
    fx = load("hierarchical")
    mutate(fx)
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        build(fx)


def test_ambiguous_dataset_name_is_rejected() -> None:
    fx = load("central")
    fx["datasets"][2]["name"] = "mnist-2"
    with pytest.raises(InvalidArgument, match="ambiguous"):
        build(fx)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("not a dict", "must be a JSON object"),
        ({"roles": []}, "roles"),
        ({"roles": [{"name": "Trainer", "isDataConsumer": True}]}, "not a valid name"),
        ({"roles": [{"name": "trainer"}]}, "isDataConsumer"),
        (
            {
                "roles": [{"name": "trainer", "isDataConsumer": True}],
                "channels": [{"name": "c", "pair": ["trainer", "ghost"]}],
            },
            "unknown role 'ghost'",
        ),
        (
            {
                "roles": [
                    {"name": "trainer", "isDataConsumer": True, "groupAssociation": [{"c": "x"}]}
                ],
                "channels": [{"name": "c", "pair": ["trainer", "trainer"]}],
            },
            "group 'x' is not in channel 'c' groupBy",
        ),
        ({"roles": [{"name": "t", "isDataConsumer": True, "colour": 1}]}, "roles.0.colour"),
    ],
)
def test_malformed_designs_are_rejected(schema: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)) as info:
        parse_design(schema)
    assert info.value.message.startswith("invalid design")


def test_malformed_job_specs_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"rounds: .*greater than or equal to 1"):
        parse_job_spec({"rounds": 0})
    with pytest.raises(InvalidArgument, match="datasets"):
        parse_job_spec({"datasets": ["ds-1"]})
    with pytest.raises(InvalidArgument, match="backend"):
        parse_job_spec({"backend": "carrier-pigeon"})


def test_normalized_design_round_trips() -> None:
    design = parse_design(load("hybrid")["design"])
    assert parse_design(dump(design)) == design


VERTICAL = Path(__file__).resolve().parents[3] / "examples" / "vertical"


def vertical(**job: Any) -> dict[str, Any]:
    spec = json.loads((VERTICAL / "job.json").read_text())
    spec.update(job)
    names = ["digits-left", "digits-right", "digits-labels"]
    return {
        "design": json.loads((VERTICAL / "design.json").read_text()),
        "job": spec,
        "datasets": [
            {"id": f"ds-{n}", "name": n, "node_id": f"node-{i}"} for i, n in enumerate(names)
        ],
    }


def test_a_vertical_job_gives_every_party_its_dataset_and_the_label_party_every_feature_party() -> (
    None
):
    tasks = build(vertical())
    assert [(t.role, t.index, t.dataset_id, t.node_id) for t in tasks] == [
        ("feature-party", 0, "ds-digits-left", "node-0"),
        ("feature-party", 1, "ds-digits-right", "node-1"),
        ("label-party", 0, "ds-digits-labels", "node-2"),
    ]
    assert all(t.data_consumer for t in tasks)
    g = graph(tasks)
    assert g["label-party/0"] == {
        "split-channel": ("default", ["feature-party/0", "feature-party/1"])
    }
    assert g["feature-party/1"] == {"split-channel": ("default", ["label-party/0"])}


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        ({"default": ["digits-left"]}, "group 'default' is a group of several data-consumer roles"),
        ({"feature-party/default": ["digits-left"]}, "role 'label-party' has no dataset"),
        ({"ghost/default": ["digits-left"]}, "'ghost' is not a data-consumer role"),
        (
            {"feature-party/g9": ["digits-left"], "label-party/default": ["digits-labels"]},
            "group 'g9' in the job's datasets is not a group of role 'feature-party'",
        ),
    ],
)
def test_bad_vertical_datasets_are_rejected_with_clear_errors(
    datasets: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        build(vertical(datasets=datasets))


def test_several_data_consumer_roles_are_for_vertical_jobs_only() -> None:
    with pytest.raises(InvalidArgument, match=r"a training job needs exactly one .*'vertical'"):
        build(vertical(kind="training"))
    fx = load("central")
    fx["job"]["kind"] = "vertical"
    with pytest.raises(InvalidArgument, match="a vertical job needs two or more data-consumer"):
        build(fx)


@pytest.mark.parametrize(
    ("kind", "hyperparameters", "message"),
    [
        ("statistics", {"bins": 0}, "hyperparameters.bins: must be an integer from 1 to 10000"),
        ("statistics", {"range": [1, 0]}, "hyperparameters.range: must be [lo, hi] with lo < hi"),
        ("statistics", {"quantiles": [0.5, 2]}, "hyperparameters.quantiles"),
        ("vertical", {"feature_widths": {"a": 0}}, "hyperparameters.feature_widths.a"),
        ("vertical", {"test_fraction": 1.0}, "hyperparameters.test_fraction"),
        ("cross-site-evaluation", {"min_samples": 0}, "hyperparameters.min_samples"),
        ("federated-magic", {}, "kind"),
    ],
)
def test_a_kinds_bad_hyperparameters_are_refused_at_the_door(
    kind: str, hyperparameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        parse_job_spec({"kind": kind, "hyperparameters": hyperparameters})
    parse_job_spec({"kind": "training", "hyperparameters": hyperparameters})  # not read there
