"""What a node's health looks like right now: CPU, memory, disk, network and NVIDIA GPUs.

Measured with psutil; GPUs through ``nvidia-smi`` when it is on the PATH (none are reported
otherwise). The agent sends a sample every ``health_interval`` seconds and exports the latest
on its ``/metrics`` port.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import structlog

log = structlog.get_logger(__name__)

NVIDIA_SMI_TIMEOUT = 10.0
NVIDIA_QUERY = "index,name,utilization.gpu,memory.used,memory.total"
MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int


@dataclass(frozen=True)
class HealthSample:
    cpu_percent: float
    cpu_count: int
    load1: float
    memory_used_bytes: int
    memory_total_bytes: int
    disk_used_bytes: int
    disk_total_bytes: int
    net_sent_bytes: int
    net_recv_bytes: int
    gpus: list[GpuReading] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class HealthProbe:
    """Takes samples; CPU use is measured between two calls (psutil's non-blocking way)."""

    def __init__(self, disk_path: Path, nvidia_smi: str | None = None) -> None:
        self.disk_path = disk_path
        self.nvidia_smi = nvidia_smi if nvidia_smi is not None else shutil.which("nvidia-smi")
        psutil.cpu_percent(interval=None)  # the first reading only starts the interval

    async def sample(self) -> HealthSample:
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self.disk_path))
        net = psutil.net_io_counters()
        return HealthSample(
            cpu_percent=min(100.0, max(0.0, psutil.cpu_percent(interval=None))),
            cpu_count=psutil.cpu_count() or 0,
            load1=os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0,
            memory_used_bytes=memory.total - memory.available,
            memory_total_bytes=memory.total,
            disk_used_bytes=disk.used,
            disk_total_bytes=disk.total,
            net_sent_bytes=net.bytes_sent if net else 0,
            net_recv_bytes=net.bytes_recv if net else 0,
            gpus=await self._gpus(),
        )

    async def _gpus(self) -> list[GpuReading]:
        if not self.nvidia_smi:
            return []
        try:
            proc = await asyncio.create_subprocess_exec(
                self.nvidia_smi,
                f"--query-gpu={NVIDIA_QUERY}",
                "--format=csv,noheader,nounits",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), NVIDIA_SMI_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise
        except (OSError, TimeoutError) as exc:
            log.warning("health.gpu_unreadable", error=str(exc) or type(exc).__name__)
            return []
        if proc.returncode != 0:
            return []
        return parse_nvidia_smi(out.decode(errors="replace"))


def parse_nvidia_smi(text: str) -> list[GpuReading]:
    """Rows of ``index, name, utilization %, memory used MiB, memory total MiB``; rows that
    do not read as numbers (``[N/A]``) are left out."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            gpus.append(
                GpuReading(
                    index=int(parts[0]),
                    name=parts[1][:256],
                    utilization_percent=min(100.0, max(0.0, float(parts[2]))),
                    memory_used_bytes=int(float(parts[3]) * MIB),
                    memory_total_bytes=int(float(parts[4]) * MIB),
                )
            )
        except ValueError:
            continue
    return gpus[:64]
