"""The contract every device kind fulfils, and the two errors devices report.

The pool and the search only ever talk to this protocol, so a new kind of
hardware is one class with these four methods (see `devices.registry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # artifact.py imports this module for MeasurementError
    from .artifact import ModelArtifact
    from .latency import Latency
    from .protocol import MeasurementProtocol

# Where a measurement failed: exporting or compiling the model, running it, running out of time,
# losing the device, or timings too noisy to trust.
FAILURES = frozenset({"export", "compile", "runtime", "timeout", "device", "noisy"})


class DeviceAgent(Protocol):
    """Runs model artifacts on one device and times them."""

    def info(self) -> dict:
        """What the device is: {"kind", "device": {hardware}, "runtime": {name, versions, options}}.

        "device" and "runtime" together are the fingerprint latencies are cached under
        (`devices.fingerprint`), so they must change whenever something that changes latency
        changes, and hold nothing that changes otherwise (readings such as the current clock
        speed go under another key, e.g. "state").
        """

    def prepare(self) -> None:
        """Set the device up once, before the first measurement."""

    def measure(self, artifact: ModelArtifact, protocol: MeasurementProtocol) -> Latency:
        """Measure one artifact; raise MeasurementError when it cannot."""

    def close(self) -> None:
        """Release what prepare() took."""


class MeasurementError(Exception):
    """One measurement failed; the device itself may still be fine.

    `failure` says at which step: export, compile, runtime, timeout, device or noisy. A noisy
    measurement carries its timings as evidence in `latency`; it is still a failure.
    Built from its args so it survives pickling across Ray.
    """

    def __init__(self, failure: str, message: str, latency: Latency | None = None) -> None:
        if failure not in FAILURES:
            raise ValueError(f"MeasurementError failure {failure!r} is not one of {sorted(FAILURES)}")
        super().__init__(failure, message, latency)
        self.failure = failure
        self.message = message
        self.latency = latency

    def __str__(self) -> str:
        return f"{self.failure} error: {' '.join(self.message.split())}"


class DeviceUnavailable(Exception):
    """A device that cannot be scheduled, started or reached; the message says what to do."""
