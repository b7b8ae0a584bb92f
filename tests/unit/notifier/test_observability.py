"""The notifier's series: queue depth per node, events, redeliveries, connected agents."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flame_notifier.observability import notifier_registry
from flame_notifier.queues import EventQueues


def _values(queues: EventQueues) -> dict[tuple[str, str], float]:
    text = generate_latest(notifier_registry(queues)).decode()
    return {
        (s.name, s.labels.get("node_id", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_depth_and_redeliveries_follow_acks_and_resubscriptions() -> None:
    queues = EventQueues()
    first = [queues.push("n-1", 1, task_id=f"t-{i}")[0] for i in range(3)]
    queues.push("n-2", 1, task_id="t-9")

    stream = queues.subscribe("n-1", 0)
    assert [(await anext(stream)).seq for _ in range(3)] == first
    got = _values(queues)
    assert got[("flame_notifier_queue_depth", "n-1")] == 3
    assert got[("flame_notifier_queue_depth", "n-2")] == 1
    assert got[("flame_notifier_events_total", "")] == 4
    assert got[("flame_notifier_redeliveries_total", "")] == 0
    assert got[("flame_notifier_agent_connected", "n-1")] == 1
    assert got[("flame_notifier_agent_connected", "n-2")] == 0

    queues.ack("n-1", first[0])
    await stream.aclose()
    again = queues.subscribe("n-1", first[0])  # reconnected without having acked the rest
    assert [(await anext(again)).seq for _ in range(2)] == first[1:]
    got = _values(queues)
    assert got[("flame_notifier_queue_depth", "n-1")] == 2
    assert got[("flame_notifier_redeliveries_total", "")] == 2
    await again.aclose()
    assert _values(queues)[("flame_notifier_agent_connected", "n-1")] == 0
