"""The host's side of the runner's line protocol (devices.board_runner), over any byte stream.

The same runner measures on a board over an SSH channel (ssh-tvm) and on this machine over a
subprocess's pipes (tvm-cpu), so both kinds time their libraries by the same program; only the
`Stream` that carries the lines differs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Protocol

from .agent import MeasurementError
from .artifact import ModelArtifact
from .latency import Latency
from .protocol import MeasurementProtocol


class RunnerLost(Exception):
    """The runner's stream closed: the runner exited or the connection dropped."""


class Stream(Protocol):
    """Bytes to and from one runner process."""

    def send(self, data: bytes) -> None:
        """Write all of `data`; RunnerLost when the runner cannot be reached."""

    def receive(self, timeout_s: float) -> bytes | None:
        """Some bytes, b"" once the runner has exited, None when nothing came within timeout_s."""

    def alive(self) -> bool: ...

    def exit_note(self) -> str:
        """After b"": how the runner ended (its status, the tail of its log), for the error message."""

    def close(self) -> None: ...


class RunnerLink:
    """One runner, spoken to one JSON line per request and per reply."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._buffer = b""

    def alive(self) -> bool:
        return self.stream.alive()

    def call(self, request: dict, timeout_s: float) -> dict:
        self.stream.send((json.dumps(request) + "\n").encode())
        return self.read(timeout_s, what="measurement")

    def read(self, timeout_s: float, what: str) -> dict:
        """The runner's next reply; TimeoutError when none comes in time, RunnerLost when it is gone."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the runner gave no answer within {timeout_s:g} s ({what})")
            chunk = self.stream.receive(min(left, 1.0))
            if chunk is None:
                continue
            if not chunk:
                raise RunnerLost(f"the runner exited ({self.stream.exit_note()})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def stop(self) -> None:
        """Ask the runner to exit, then close the stream."""
        try:
            if self.alive():
                self.stream.send(b'{"op": "exit"}\n')
        except RunnerLost:
            pass
        self.stream.close()


def measure_request(artifact: ModelArtifact, library: str | Path, protocol: MeasurementProtocol,
                    runtime: str) -> dict:
    """The request that has a runner load `library` (where the runner sees it) and measure it."""
    return {"op": "measure", "library": str(library),
            "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in artifact.inputs],
            "protocol": protocol.to_dict(), "runtime": runtime}


def reply_latency(reply: dict) -> Latency:
    """The Latency in a runner's reply, or the MeasurementError it reports (with its evidence)."""
    if reply["ok"]:
        return Latency.from_dict(reply["latency"])
    evidence = Latency.from_dict(reply["latency"]) if reply.get("latency") else None
    raise MeasurementError(reply["failure"], reply["message"], latency=evidence)


def longest_measurement_s(protocol: MeasurementProtocol, slack_s: float) -> float:
    """The longest a measurement under `protocol` can take on the runner, plus `slack_s` to load it."""
    p = protocol
    per_attempt = p.rounds * (p.warmup_seconds + p.max_seconds + p.cooldown_seconds)
    return per_attempt * (1 + p.max_remeasures) + slack_s
