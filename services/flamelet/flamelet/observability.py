"""The flamelet's Prometheus series: its node's latest health sample and its tasks."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flamelet.agent import Agent


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        node = agent.identity.node_id
        yield _gauge(
            "flame_flamelet_connected", "1 while subscribed to the notifier", agent.connected, node
        )
        tasks = GaugeMetricFamily(
            "flame_flamelet_tasks", "Tasks this agent keeps, by phase", labels=["node_id", "phase"]
        )
        for phase, n in agent.task_phases().items():
            tasks.add_metric([node, phase], n)
        yield tasks
        yield _gauge(
            "flame_flamelet_warm_runners_idle",
            "Task processes started ahead, waiting for a task",
            len(agent.warm.idle()),
            node,
        )
        yield _counter(
            "flame_flamelet_warm_starts",
            "Tasks that ran in a process started ahead (the rest started cold)",
            agent.warm.handed,
            node,
        )
        yield CounterMetricFamily(
            "flame_flamelet_health_reports",
            "Health samples the control plane accepted",
            value=agent.health_reports,
        )
        yield CounterMetricFamily(
            "flame_flamelet_health_report_failures",
            "Health samples that could not be reported",
            value=agent.health_failures,
        )
        sample = agent.last_health
        if sample is None:
            return
        yield _gauge("flame_node_cpu_percent", "CPU use, percent", sample.cpu_percent, node)
        yield _gauge("flame_node_cpu_count", "Logical CPUs", sample.cpu_count, node)
        yield _gauge("flame_node_load1", "One-minute load average", sample.load1, node)
        yield _gauge(
            "flame_node_memory_used_bytes", "Memory in use", sample.memory_used_bytes, node
        )
        yield _gauge("flame_node_memory_total_bytes", "Memory", sample.memory_total_bytes, node)
        yield _gauge(
            "flame_node_disk_used_bytes", "Disk in use (agent home)", sample.disk_used_bytes, node
        )
        yield _gauge(
            "flame_node_disk_total_bytes", "Disk size (agent home)", sample.disk_total_bytes, node
        )
        for direction, value in (("sent", sample.net_sent_bytes), ("recv", sample.net_recv_bytes)):
            yield _counter(
                f"flame_node_network_{direction}_bytes",
                f"Network bytes {direction} since the node booted",
                value,
                node,
            )
        if sample.gpus:
            util = GaugeMetricFamily(
                "flame_node_gpu_utilization_percent", "GPU use", labels=["node_id", "gpu"]
            )
            mem = GaugeMetricFamily(
                "flame_node_gpu_memory_used_bytes", "GPU memory in use", labels=["node_id", "gpu"]
            )
            for gpu in sample.gpus:
                util.add_metric([node, str(gpu.index)], gpu.utilization_percent)
                mem.add_metric([node, str(gpu.index)], gpu.memory_used_bytes)
            yield util
            yield mem


def _gauge(name: str, doc: str, value: float, node: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["node_id"])
    family.add_metric([node], float(value))
    return family


def _counter(name: str, doc: str, value: float, node: str) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["node_id"])
    family.add_metric([node], float(value))
    return family


def flamelet_registry(agent: Agent) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    return registry
