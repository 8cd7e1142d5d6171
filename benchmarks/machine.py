"""What a benchmark records about where it ran: the machine, the library versions, and how busy the CPUs were."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

from hilas.devices.host import cpu_model, host_state


def machine() -> dict:
    """The CPU, its cores, the OS and the load average now (others' work on a shared machine shows here)."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "os": platform.platform(),
            "load_average": host_state()["load_average"]}


def versions() -> dict:
    """The versions that decide these numbers: Python, torch, Ray, onnxruntime, numpy."""
    import numpy
    import onnxruntime
    import ray
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__}


@dataclass(frozen=True)
class CpuTimes:
    """CPU time counters at one moment, in clock ticks: the machine's (all cores, /proc/stat) and this
    process tree's (this process and its descendants: with a local Ray, the Ray daemons and actors).

    On a shared machine the first includes others' work; the second is hilas's own, as long as both
    readings are taken while the processes that matter live (the CPU of a process that exited is not
    counted). Zeros where /proc is missing (not Linux), so the shares read None.
    """

    machine_busy: int
    machine_total: int
    ours: int
    at: float

    @classmethod
    def now(cls) -> CpuTimes:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return cls(0, 0, 0, time.monotonic())
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
        total = sum(fields[:8])  # guest time is already counted in user
        return cls(total - idle, total, _tree_ticks(os.getpid()), time.monotonic())

    def shares_since(self, earlier: CpuTimes) -> dict[str, float | None]:
        """Fractions of all cores' time between `earlier` and now: busy machine-wide, and used by this tree."""
        total = self.machine_total - earlier.machine_total
        if total <= 0:
            return {"machine_busy": None, "ours": None}
        return {"machine_busy": (self.machine_busy - earlier.machine_busy) / total,
                "ours": (self.ours - earlier.ours) / total}


def _tree_ticks(root: int) -> int:
    """User and system clock ticks of `root` and every live descendant (processes that exited are not counted)."""
    parents, ticks = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:
            continue  # exited meanwhile
        pid = int(entry.name)
        parents[pid], ticks[pid] = int(fields[1]), int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return sum(ticks.get(pid, 0) for pid in tree)


def measured_on(result: dict) -> str:
    """The opening sentence of a results section: when, where, with which versions, by which command."""
    m, v = result["machine"], result["versions"]
    return (f"Measured {result['date']} on {m['cpu']} ({m['cores']} cores; {m['os']}; load average "
            f"{_load(m['load_average'])} before, {_load(m['load_average_after'])} after), Python {v['python']}, "
            f"torch {v['torch']}, onnxruntime {v['onnxruntime']}, Ray {v['ray']}. Command: `{result['command']}` "
            f"({result['seconds']} s).")


def share(value: float | None) -> str:
    """A fraction as a percentage; '?' where it could not be read."""
    return f"{value:.0%}" if value is not None else "?"


def cores(value: float | None) -> str:
    """CPU seconds a second (cores kept busy); '?' where they could not be read."""
    return f"{value:.2f}" if value is not None else "?"


def _load(load: list[float] | None) -> str:
    return f"{load[0]:g}" if load else "?"
