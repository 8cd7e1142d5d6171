"""Device kinds for tests, loaded by Ray workers through "tests.kinds:Name" (so no torch import here)."""

from pathlib import Path

from hilas.devices import DeviceUnavailable, VirtualAgent


class VanishingBoard(VirtualAgent):
    """A simulated board that answers `answers` measurements, then is unreachable until `revive` exists.

    The count lives in a file, so it survives the pool restarting the agent's process.
    """

    def __init__(self, *, counter: str, answers: int, **options) -> None:
        super().__init__(**options)
        self.counter = Path(counter)
        self.answers = answers

    def measure(self, artifact, protocol):
        done = int(self.counter.read_text()) if self.counter.exists() else 0
        if done >= self.answers and not self.counter.with_suffix(".revive").exists():
            raise DeviceUnavailable("board 10.0.0.7:22: no answer within 10 s (tried 3 times)")
        self.counter.write_text(str(done + 1))
        return super().measure(artifact, protocol)
