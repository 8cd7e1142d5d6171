"""What the machine an agent runs on is (its fingerprint) and how it is doing (its state)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name; /proc/cpuinfo is more precise than platform.processor() on Linux."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def host_fingerprint() -> dict:
    """The machine, as far as it decides latency; nothing here changes between two runs on it."""
    return {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "frequency_governor": read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") or "not readable",
        "os": platform.platform(),
    }


def host_state() -> dict:
    """Readings that change from moment to moment: kept with results, never part of a fingerprint."""
    mhz = read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu0_khz": int(mhz) if mhz and mhz.isdigit() else None,
            "load_average": [round(v, 2) for v in load] if load else None}


def fingerprint(info: dict) -> str:
    """A short hash of what an agent's info() says the device and runtime are.

    Latencies are cached under it: a changed CPU, driver, runtime version or runtime option is a
    different fingerprint. Kinds that do not split their info into "device" and "runtime" are
    fingerprinted by all of it.
    """
    part = {k: info[k] for k in ("kind", "device", "runtime") if k in info} if "device" in info else info
    canonical = json.dumps(part, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
