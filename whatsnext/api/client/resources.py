"""The worker's capacity: CPU count and GPU ids, and handing GPU ids to jobs without sharing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from ...limits import MAX_COUNT

UNBOUNDED = MAX_COUNT
"""What an unbounded capacity offers: as many CPUs (or GPUs) as a job may ask for."""


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
    """Free CPU and GPU ids of one worker. Jobs take and give back; GPUs are never shared.

    ``cpu=None`` or ``gpu_ids=None``: not bounded (a worker whose jobs run elsewhere, on SLURM or
    RUN:AI): it offers :data:`UNBOUNDED` and taking never lessens it (no GPU ids are handed out)."""

    def __init__(self, cpu: int | None, gpu_ids: Iterable[str] | None) -> None:
        self.cpu_bounded = cpu is not None
        self.gpus_bounded = gpu_ids is not None
        self.total_cpu = cpu if cpu is not None else UNBOUNDED
        self.gpu_ids = list(gpu_ids or ())
        self.free_cpu = self.total_cpu
        self._free_gpus = list(self.gpu_ids)

    @property
    def total_accelerators(self) -> int:
        return len(self.gpu_ids) if self.gpus_bounded else UNBOUNDED

    @property
    def free_accelerators(self) -> int:
        return len(self._free_gpus) if self.gpus_bounded else UNBOUNDED

    def fits(self, cpu: int, accelerators: int) -> bool:
        return (not self.cpu_bounded or cpu <= self.free_cpu) and (
            not self.gpus_bounded or accelerators <= len(self._free_gpus)
        )

    def take(self, cpu: int, accelerators: int) -> list[str]:
        if not self.fits(cpu, accelerators):
            raise RuntimeError(
                f"capacity exceeded: need {cpu} CPU/{accelerators} GPU, "
                f"free {self.free_cpu}/{len(self._free_gpus)}"
            )
        if self.cpu_bounded:
            self.free_cpu -= cpu
        if not self.gpus_bounded:
            return []
        ids, self._free_gpus = self._free_gpus[:accelerators], self._free_gpus[accelerators:]
        return ids

    def give(self, cpu: int, ids: Iterable[str]) -> None:
        if self.cpu_bounded:
            self.free_cpu += cpu
        for gpu in ids:
            if gpu not in self._free_gpus:
                self._free_gpus.append(gpu)
        order = {g: i for i, g in enumerate(self.gpu_ids)}
        self._free_gpus.sort(key=lambda g: order.get(g, len(order)))


def worker_capacity(
    cpu: int | None,
    accelerators: str | int | Sequence[str | int] | None,
    *,
    runs_elsewhere: bool = False,
) -> Capacity:
    """A worker's capacity: the CPUs and GPUs given, else this host's. A worker whose formatter
    runs its jobs elsewhere (SLURM, RUN:AI) is bounded only by what is given: the host it runs
    on (a login node) does not bound the cluster, its number of jobs at once does (``max_jobs``)."""
    if runs_elsewhere:
        return Capacity(cpu, None if accelerators is None else resolve_gpu_ids(accelerators))
    return Capacity(cpu if cpu is not None else (os.cpu_count() or 1), resolve_gpu_ids(accelerators))
