"""Fingerprint of the machine an agent runs on (part of every local agent's info())."""

from __future__ import annotations

import os
import platform


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


def host_info() -> dict:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
