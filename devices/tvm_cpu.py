"""This machine's CPU through TVM: compiled for the host, timed by the board runner in a local process.

The runner (devices.board_runner with the modules it needs) is copied into a private directory and
started as `python -m hilas_board.board_runner`, exactly as ssh-tvm starts it on a board, so both
kinds measure by the same program and the same line protocol; only the pipe differs. It is the kind
that runs binary candidates on the host: their 1-bit convolutions compile to bitserial kernels
(devices.tvm_binary), which onnxruntime cannot run.

The runner is pinned to one core by default (the machine's last, as onnxruntime-cpu is) with TVM
using one thread, so the host's accuracy work runs on the other cores without disturbing it.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import board_runner
from .agent import DeviceUnavailable, MeasurementError
from .artifact import ModelArtifact
from .host import host_fingerprint, host_state
from .latency import Latency
from .protocol import MeasurementProtocol
from .runner_link import RunnerLink, RunnerLost, longest_measurement_s, measure_request, reply_latency
from .tvm_binary import KERNEL
from .tvm_build import PIPELINE, check_target, compile_library

LOAD_SLACK_S = 30.0  # beyond the protocol's own time: loading a library and answering


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. "znver4", "cortex-a72"): TVM refuses "native"."""
    from tvm.target.codegen import llvm_get_system_cpu

    return str(llvm_get_system_cpu())


class TvmCpuAgent:
    kind = "tvm-cpu"

    def __init__(self, *, mcpu: str | None = None, num_threads: int = 1, cpu_affinity: list[int] | None = None,
                 start_timeout_s: float = 60.0, cache_dir: str | None = None) -> None:
        """`mcpu` is the CPU LLVM compiles for (default: this machine's); `num_threads` is TVM's thread count."""
        if mcpu is not None and (not isinstance(mcpu, str) or not mcpu):
            raise ValueError(f"mcpu must be an LLVM CPU name such as \"znver4\" or \"cortex-a72\", got {mcpu!r}")
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ValueError(f"num_threads must be a whole number >= 1, got {num_threads!r}")
        if cpu_affinity is not None and (
            not cpu_affinity or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cpu_affinity)
        ):
            raise ValueError(f"cpu_affinity must be a non-empty list of core numbers, got {cpu_affinity!r}")
        if not isinstance(start_timeout_s, (int, float)) or start_timeout_s <= 0:
            raise ValueError(f"start_timeout_s must be a number of seconds > 0, got {start_timeout_s!r}")
        self.target = {"kind": "llvm", "mcpu": mcpu or host_cpu()}
        check_target(self.target)
        _check_cpu(self.target["mcpu"])
        self.num_threads = num_threads
        self.cpu_affinity = cpu_affinity
        self.start_timeout_s = start_timeout_s
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._cores: list[int] | None = None  # where the runner is pinned, from prepare()
        self._session: Path | None = None  # the runner's private directory
        self._runner: RunnerLink | None = None
        self._tvm = ""

    def info(self) -> dict:
        if self._cores is None:
            pinning = "not pinned: prepare() has not run"
        else:
            pinning = "pinned" if self._cores else "not pinned: only one core available"
        return {
            "kind": self.kind,
            "device": host_fingerprint(),
            "runtime": {"name": "tvm", "version": self._tvm or _tvm_version(), "target": self.target,
                        "pipeline": PIPELINE, "binary_kernels": KERNEL, "num_threads": self.num_threads,
                        "pinning": pinning, "cores": self._cores or None},
            "state": host_state(),
        }

    def prepare(self) -> None:
        """Choose the runner's cores, copy the runner into a private directory and start it."""
        self._cores = self._choose_cores()
        self._tvm = _tvm_version()
        self._session = Path(tempfile.mkdtemp(prefix="hilas-tvm-cpu-"))
        package = self._session / board_runner.BOARD_PACKAGE
        package.mkdir()
        (package / "__init__.py").write_text("")
        here = Path(board_runner.__file__).parent
        for name in board_runner.BOARD_MODULES:
            shutil.copy(here / name, package / name)
        self._start_runner()

    def measure(self, artifact: ModelArtifact, protocol: MeasurementProtocol) -> Latency:
        """Compile for this CPU (or take the library from the cache) and have the runner measure it."""
        if self._session is None:
            raise MeasurementError("device", "the tvm-cpu device was not prepared: call prepare() before measure()")
        library = compile_library(artifact, self.target, None, self.cache_dir)
        runtime = f"tvm {self._tvm} on this CPU ({self.target['mcpu']}, {self.num_threads} thread(s))"
        request = measure_request(artifact, library, protocol, runtime)
        try:
            return self._call(request, protocol, artifact.structure_key)
        except RunnerLost:
            self._stop_runner()  # a runner that died is started again and asked once more
        try:
            return self._call(request, protocol, artifact.structure_key)
        except RunnerLost as e:
            self._stop_runner()
            raise MeasurementError("runtime", f"the tvm-cpu runner died twice while measuring {artifact.structure_key} "
                                              f"({e}); the model likely crashes the TVM runtime") from None

    def close(self) -> None:
        """Stop the runner and remove its directory."""
        self._stop_runner()
        if self._session is not None:
            shutil.rmtree(self._session, ignore_errors=True)
            self._session = None

    # the runner --------------------------------------------------------------------------------
    def _choose_cores(self) -> list[int]:
        """The runner's cores: cpu_affinity, else the last core this process may use ([] when only one)."""
        if not hasattr(os, "sched_getaffinity"):
            return []
        allowed = os.sched_getaffinity(0)
        if self.cpu_affinity is None:
            return [max(allowed)] if len(allowed) > 1 else []
        if not set(self.cpu_affinity) <= allowed:
            raise DeviceUnavailable(f"tvm-cpu: cannot pin to cores {sorted(self.cpu_affinity)}; this process may "
                                    f"use cores {sorted(allowed)}: change the device's cpu_affinity option")
        return sorted(self.cpu_affinity)

    def _start_runner(self) -> None:
        env = {**os.environ, **board_runner.RUNTIME_ONLY_ENV, "TVM_NUM_THREADS": str(self.num_threads)}
        env.pop(board_runner.CORES_ENV, None)
        if self._cores:
            env[board_runner.CORES_ENV] = ",".join(map(str, self._cores))
        try:
            stream = _ProcessStream([sys.executable, "-u", "-m", f"{board_runner.BOARD_PACKAGE}.board_runner"],
                                    self._session, env)
        except OSError as e:
            raise DeviceUnavailable(f"tvm-cpu: cannot start the runner with {sys.executable}: {e}") from None
        self._runner = RunnerLink(stream)
        try:
            hello = self._runner.read(self.start_timeout_s, what="start (import TVM)")
        except (RunnerLost, TimeoutError) as e:
            self._stop_runner()
            raise DeviceUnavailable(f"tvm-cpu: the runner did not start: {e}") from None
        if not hello["ok"]:
            self._stop_runner()
            raise DeviceUnavailable(f"tvm-cpu: {hello['message']}")

    def _call(self, request: dict, protocol: MeasurementProtocol, structure_key: str) -> Latency:
        if self._runner is None or not self._runner.alive():
            self._stop_runner()
            self._start_runner()
        try:
            return reply_latency(self._runner.call(request, longest_measurement_s(protocol, LOAD_SLACK_S)))
        except TimeoutError as e:
            self._stop_runner()
            raise MeasurementError("timeout", f"{structure_key} on tvm-cpu: {e}") from None

    def _stop_runner(self) -> None:
        if self._runner is not None:
            self._runner.stop()
            self._runner = None


class _ProcessStream:
    """A runner in a local process, through its pipes (a runner_link.Stream); its stderr goes to runner.log."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self._log = cwd / "runner.log"
        with open(self._log, "ab") as log:
            self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=log, bufsize=0)

    def send(self, data: bytes) -> None:
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except OSError as e:  # BrokenPipeError: the runner is gone
            raise RunnerLost(f"cannot reach the runner: {e}") from None

    def receive(self, timeout_s: float) -> bytes | None:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        return os.read(self.process.stdout.fileno(), 65536) if ready else None

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_note(self) -> str:
        try:
            status = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            status = "unknown"
        tail = " | ".join(line for line in self._log.read_text(errors="replace").splitlines()[-5:] if line.strip())
        return f"status {status}" + (f"; its log: {tail[-600:]}" if tail else "")

    def close(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _check_cpu(mcpu: str) -> None:
    """LLVM compiles for an unknown CPU with a warning only; refuse it here, naming this machine's CPU."""
    from tvm.target.codegen import llvm_get_system_triple, llvm_is_valid_cpu

    if not llvm_is_valid_cpu(mcpu, llvm_get_system_triple()):
        raise ValueError(f"mcpu {mcpu!r} is not a CPU LLVM knows for this machine; this CPU is {host_cpu()!r} "
                         f"(leave mcpu out to use it)")


def _tvm_version() -> str:
    import tvm

    return tvm.__version__

