"""The worker's capacity: CPU count and GPU ids, and handing GPU ids to jobs without sharing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence


def detect_gpus() -> list[str]:
    """GPU indexes from ``nvidia-smi --query-gpu``, or NVML when importable; [] when there are none."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
            return [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:  # no driver, no device: no GPUs
        return []


def parse_gpus(spec: str | int | Sequence[str | int] | None) -> list[str] | int | None:
    """``"0,1,3"`` → ids; ``"2"``/``2`` → a count; None → not given."""
    if spec is None:
        return None
    if isinstance(spec, int):
        return spec
    if isinstance(spec, str):
        spec = spec.strip()
        if spec.isdigit():
            return int(spec)
        return [p.strip() for p in spec.split(",") if p.strip()]
    return [str(s) for s in spec]


def resolve_gpu_ids(given: str | int | Sequence[str | int] | None) -> list[str]:
    """GPU ids for the worker: given ids; else the inherited CUDA_VISIBLE_DEVICES; else detection.

    A count takes the first N ids of the inherited/detected list (or 0..N-1 when nothing is visible).
    """
    parsed = parse_gpus(given)
    if isinstance(parsed, list):
        return parsed
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None and inherited.strip() not in ("", "-1", "NoDevFiles"):
        visible = [p.strip() for p in inherited.split(",") if p.strip()]
    elif inherited is not None:
        visible = []
    else:
        visible = detect_gpus() if parsed is None or parsed > 0 else []
    if isinstance(parsed, int):
        if parsed <= len(visible):
            return visible[:parsed]
        return (
            visible
            + [str(i) for i in range(len(visible), parsed) if str(i) not in visible][: parsed - len(visible)]
        )
    return visible


class Capacity:
    """Free CPU and GPU ids of one worker. Jobs take and give back; GPUs are never shared."""

    def __init__(self, cpu: int, gpu_ids: Iterable[str]) -> None:
        self.total_cpu = cpu
        self.gpu_ids = list(gpu_ids)
        self.free_cpu = cpu
        self._free_gpus = list(self.gpu_ids)

    @property
    def total_accelerators(self) -> int:
        return len(self.gpu_ids)

    @property
    def free_accelerators(self) -> int:
        return len(self._free_gpus)

    def fits(self, cpu: int, accelerators: int) -> bool:
        return cpu <= self.free_cpu and accelerators <= len(self._free_gpus)

    def take(self, cpu: int, accelerators: int) -> list[str]:
        if not self.fits(cpu, accelerators):
            raise RuntimeError(
                f"capacity exceeded: need {cpu} CPU/{accelerators} GPU, "
                f"free {self.free_cpu}/{len(self._free_gpus)}"
            )
        self.free_cpu -= cpu
        ids, self._free_gpus = self._free_gpus[:accelerators], self._free_gpus[accelerators:]
        return ids

    def give(self, cpu: int, ids: Iterable[str]) -> None:
        self.free_cpu += cpu
        for gpu in ids:
            if gpu not in self._free_gpus:
                self._free_gpus.append(gpu)
        order = {g: i for i, g in enumerate(self.gpu_ids)}
        self._free_gpus.sort(key=lambda g: order.get(g, len(order)))
