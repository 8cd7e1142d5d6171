"""From a device's name and kind to a running agent.

Kinds are found through the entry-point group `hilas.devices` (so an installed
package can add hardware) or given directly as a "module:Class" path.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from .agent import DeviceAgent

ENTRY_POINT_GROUP = "hilas.devices"


@dataclass(frozen=True)
class DeviceSpec:
    """A named device instance: which agent kind, its options, and where Ray may place it.

    ray_resources are Ray custom resources the agent's actor requires, e.g.
    {"board-rpi4": 1} to run it on the node started with that resource.
    measurement holds this device's own measurement settings, over the run's
    (e.g. {"rounds": 5, "cooldown_seconds": 2.0} for a board that heats up).
    """

    name: str
    kind: str
    options: dict = field(default_factory=dict)
    ray_resources: dict = field(default_factory=dict)
    measurement: dict = field(default_factory=dict)


LOCAL_CPU = DeviceSpec("local-cpu", "onnxruntime-cpu")


def known_kinds() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def agent_class(kind: str) -> type:
    """The agent class for a registered kind name or a "module:Class" path."""
    if ":" in kind:
        module_name, _, class_name = kind.partition(":")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as e:
            raise ValueError(
                f"device kind {kind!r}: cannot load {class_name!r} from module {module_name!r}: {e}"
            ) from e
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        return ep.load()
    raise ValueError(
        f"unknown device kind {kind!r}; known kinds: {', '.join(known_kinds()) or 'none'} "
        f"(or give a 'module:Class' path)"
    )


def make_agent(spec: DeviceSpec) -> DeviceAgent:
    """Build (not prepare) the agent for a device; bad options are reported against the device's name."""
    cls = agent_class(spec.kind)
    try:
        inspect.signature(cls).bind(**spec.options)
    except TypeError as e:
        accepted = ", ".join(inspect.signature(cls).parameters) or "none"
        raise ValueError(
            f"device {spec.name!r} (kind {spec.kind!r}): bad options {spec.options}: {e}; accepted options: {accepted}"
        ) from e
    try:
        return cls(**spec.options)
    except (TypeError, ValueError) as e:
        raise ValueError(f"device {spec.name!r} (kind {spec.kind!r}): bad option value: {e}") from e
