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

ERROR_KINDS = frozenset({"export", "compile", "runtime", "timeout", "device"})


class DeviceAgent(Protocol):
    """Runs model artifacts on one device and times them."""

    def info(self) -> dict:
        """Fingerprint of the device: hardware, runtime and versions, options.

        Measurements are cached under this fingerprint, so it must change
        whenever something that changes latency changes.
        """

    def prepare(self) -> None:
        """Set the device up once, before the first measurement."""

    def measure(self, artifact: ModelArtifact, protocol: MeasurementProtocol) -> Latency:
        """Measure one artifact; raise MeasurementError when it cannot."""

    def close(self) -> None:
        """Release what prepare() took."""


class MeasurementError(Exception):
    """One measurement failed; the device itself may still be fine.

    `kind` says at which step: export, compile, runtime, timeout or device.
    Built from (kind, message) args so it survives pickling across Ray.
    """

    def __init__(self, kind: str, message: str) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"MeasurementError kind {kind!r} is not one of {sorted(ERROR_KINDS)}")
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind} error: {' '.join(self.message.split())}"


class DeviceUnavailable(Exception):
    """A device that cannot be scheduled, started or reached; the message says what to do."""
