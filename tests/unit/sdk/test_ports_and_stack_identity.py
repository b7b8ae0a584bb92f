"""Loopback ports for local stacks and processes, and the identity a stack home keeps."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from flame.cli.stack import Stack
from flame.ports import free_ports


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
    assert all(1024 <= p <= 65535 for p in ports)


NAMES = ["api", "controller", "controller-metrics", "mlflow", "notifier", "notifier-metrics"]


def test_a_new_home_gets_distinct_ports_kept_privately(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "home")
    stack.home.mkdir(parents=True)
    ports, token = stack._identity()
    assert sorted(ports) == NAMES
    assert len(set(ports.values())) == len(NAMES)
    assert stack._identity() == (ports, token)  # a second `up` reuses them
    assert stat.S_IMODE((stack.home / "identity.json").stat().st_mode) == 0o600


def test_an_identity_with_one_port_twice_gets_new_ports_and_keeps_its_token(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path / "home")
    stack.home.mkdir(parents=True)
    port = free_ports(1)[0]
    broken = {"controller": port, "notifier": port + 1, "api": port, "mlflow": port + 2}
    (stack.home / "identity.json").write_text(
        json.dumps({"ports": broken, "admin_token": "flm_user_kept"})
    )
    ports, token = stack._identity()
    assert token == "flm_user_kept"
    assert len(set(ports.values())) == len(NAMES)
    assert json.loads((stack.home / "identity.json").read_text())["ports"] == ports


def test_an_older_identity_keeps_its_ports_and_gains_the_metrics_ports(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "home")
    stack.home.mkdir(parents=True)
    old = dict(zip(["controller", "notifier", "api", "mlflow"], free_ports(4), strict=True))
    (stack.home / "identity.json").write_text(json.dumps({"ports": old, "admin_token": "flm_x"}))
    ports, token = stack._identity()
    assert token == "flm_x"
    assert {k: ports[k] for k in old} == old
    assert sorted(ports) == NAMES and len(set(ports.values())) == len(NAMES)
    node = stack._port("flamelet-node-0-metrics")
    assert node not in ports.values()
    assert stack._port("flamelet-node-0-metrics") == node  # kept for the next `up`
