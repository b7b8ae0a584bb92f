"""Node health: measured with psutil on this machine, reported, and shown on /metrics."""

from __future__ import annotations

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from flame_service.metrics_endpoint import start_metrics_server
from flamelet.health import HealthProbe, parse_nvidia_smi
from flamelet.observability import flamelet_registry

from .conftest import Node, Running, eventually


def test_nvidia_smi_rows_are_read_and_unreadable_ones_left_out() -> None:
    out = "0, Tesla T4, 37, 1024, 15360\n1, A100, [N/A], 1, 2\ngarbage\n"
    (gpu,) = parse_nvidia_smi(out)
    assert (gpu.index, gpu.name, gpu.utilization_percent) == (0, "Tesla T4", 37.0)
    assert gpu.memory_used_bytes == 1024 * 2**20 and gpu.memory_total_bytes == 15360 * 2**20


async def test_a_sample_reads_this_machine(tmp_path) -> None:
    sample = await HealthProbe(tmp_path, nvidia_smi="").sample()
    assert 0 <= sample.cpu_percent <= 100
    assert sample.cpu_count == psutil.cpu_count()
    assert 0 < sample.memory_used_bytes < sample.memory_total_bytes
    assert sample.memory_total_bytes == psutil.virtual_memory().total
    assert 0 < sample.disk_used_bytes < sample.disk_total_bytes
    assert sample.net_recv_bytes > 0  # loopback traffic counts too
    assert sample.gpus == []  # no nvidia-smi asked


async def test_a_missing_nvidia_smi_reports_no_gpus(tmp_path) -> None:
    probe = HealthProbe(tmp_path, nvidia_smi=str(tmp_path / "nvidia-smi"))
    assert (await probe.sample()).gpus == []


async def test_the_agent_reports_health_and_exports_it(node: Node) -> None:
    fake = node.fake
    agent, api = node.agent(health_interval=0.2, metrics_port=0)
    server = await start_metrics_server(agent.settings, flamelet_registry(agent))
    assert server is not None
    try:
        async with Running(agent, api):
            await eventually(lambda: len(fake.health) >= 2, what="two health reports")
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{server.port}/metrics")).text
    finally:
        await server.stop()
    first = fake.health[0]
    assert first["memory_total_bytes"] == psutil.virtual_memory().total
    assert set(first) >= {"cpu_percent", "disk_used_bytes", "net_sent_bytes", "gpus"}
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["flame_node_memory_total_bytes"] == psutil.virtual_memory().total
    assert 0 <= values["flame_node_cpu_percent"] <= 100
    assert values["flame_flamelet_health_reports_total"] >= 1
    assert values["flame_flamelet_health_report_failures_total"] == 0
    assert "flame_flamelet_tasks" in values
