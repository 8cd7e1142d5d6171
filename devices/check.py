"""Checking one device end to end: start its agent, describe it, time the reference model, close it.

This is what `hilas devices check` runs before a device is trusted with a search: it shows
what the device is (its fingerprint) and that it measures steadily, in seconds, without Ray.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .agent import DeviceUnavailable, MeasurementError
from .drift import measure_one, reference_artifact
from .host import fingerprint
from .latency import Latency
from .protocol import MeasurementProtocol
from .registry import DeviceSpec, make_agent


@dataclass(frozen=True)
class DeviceCheck:
    """A device that answered: what it says it is, the hash latencies are cached under, its reference time."""

    info: dict
    fingerprint: str
    latency: Latency


def check_device(spec: DeviceSpec, protocol: MeasurementProtocol, timeout_s: float) -> DeviceCheck:
    """Make, prepare, describe and measure the device on the reference model, then close it.

    `protocol` is updated with the device's own measurement settings. Runs in a daemon thread, so
    a device that hangs (an unreachable board, a stuck compiler) costs `timeout_s`, not forever.
    Raises ValueError (bad definition), DeviceUnavailable (cannot start, or too slow) or
    MeasurementError (started, but could not measure the reference).
    """
    protocol = protocol.updated(spec.measurement)
    agent = make_agent(spec)
    step = ["starting it (prepare)"]
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(_describe_and_measure(spec, agent, protocol, step))
        except BaseException as e:  # handed to the caller's thread
            outcome.append(e)

    worker = threading.Thread(target=run, name=f"hilas-check-{spec.name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        raise DeviceUnavailable(f"device {spec.name!r} (kind {spec.kind}) did not finish {step[0]} within "
                                f"{timeout_s:g} s; check that it is reachable, or allow it longer (--timeout)")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _describe_and_measure(spec: DeviceSpec, agent, protocol: MeasurementProtocol, step: list[str]) -> DeviceCheck:
    """The check itself; `step` says what it is doing, for the timeout's message."""
    try:
        agent.prepare()
        step[0] = "describing itself (info)"
        info = agent.info()
        step[0] = "measuring the reference model"
        result = measure_one(agent, reference_artifact(), protocol)
    except (DeviceUnavailable, MeasurementError):
        raise
    except Exception as e:
        raise DeviceUnavailable(f"device {spec.name!r} (kind {spec.kind}) failed while {step[0]}: "
                                f"{type(e).__name__}: {e}") from e
    finally:
        agent.close()
    if isinstance(result, MeasurementError):
        raise result
    return DeviceCheck(info, fingerprint(info), result)
