"""The runner hilas uploads to a board: loads compiled libraries and times them with the TVM runtime.

Why a runner of our own and not TVM's RPC server: one measurement is one request, and the whole
measurement protocol (warm-up, rounds, noise re-measure) runs on the board, so timings never cross
the network one by one; the runner is the same `protocol.py` every other agent uses, uploaded next
to it, so a board is measured by the same rules. It is started once per search, so Python and TVM
are imported once (about 9 s under emulation), not per candidate.

Line protocol, version 2, on the runner's stdin and stdout (one JSON object per line):
  runner -> host, first:  {"ok": true, "runner": 2, "info": {...}}   (or {"ok": false, "failure", "message"})
  host -> runner:         {"op": "measure", "library": PATH, "inputs": [{"name", "shape", "dtype"}],
                           "protocol": {...}, "runtime": LABEL}
                          {"op": "exit"}
  runner -> host:         {"ok": true, "latency": {...}} or {"ok": false, "failure", "message", "latency"?}
Anything libraries print goes to stderr (the host sends it to a log file), never into the replies.

Runs as `python -m hilas_board.board_runner` on the board; it needs only Python 3.8+, numpy and TVM.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
import traceback

import numpy as np

from .agent import MeasurementError
from .host import host_fingerprint, host_state
from .protocol import MeasurementProtocol, host_clock_resolution_ns, measure_rounds

RUNNER_PROTOCOL = 2  # 2: a failure reply names its failure under "failure" (1: "kind")
# The modules uploaded with this one, as a package named BOARD_PACKAGE on the board.
BOARD_MODULES = ("agent.py", "latency.py", "protocol.py", "host.py", "board_runner.py")
BOARD_PACKAGE = "hilas_board"
# Makes `import tvm` load only TVM's runtime library, not its compiler: about 3 s instead of 9 s
# under emulation, and less memory on a small board. The runner needs nothing else.
RUNTIME_ONLY_ENV = {"TVM_USE_RUNTIME_LIB": "1"}
# Cores the runner pins itself to before TVM starts a thread ("3" or "2,3"); unset: not pinned.
CORES_ENV = "HILAS_RUNNER_CORES"


class VmSession:
    """One fresh Relax VM over a loaded library: a round's session."""

    def __init__(self, tvm, library, inputs: list[dict]) -> None:
        self._tvm = tvm
        self._device = tvm.cpu()
        self._vm = tvm.runtime.vm.VirtualMachine(library, self._device)
        rng = np.random.default_rng(0)  # latency does not depend on values
        self._args = [tvm.runtime.tensor(rng.standard_normal(s["shape"]).astype(s["dtype"]), self._device)
                      for s in inputs]
        self._main = self._vm["main"]
        self._evaluators: dict[int, object] = {}

    def __call__(self) -> None:
        self._main(*self._args)

    def time_ms(self, inner: int) -> float:
        """Milliseconds `inner` back-to-back runs took, timed by TVM's own timer in C++."""
        evaluator = self._evaluators.get(inner)
        if evaluator is None:
            evaluator = self._vm.time_evaluator("main", self._device, number=inner, repeat=1)
            self._evaluators[inner] = evaluator
        return evaluator(*self._args).mean * inner * 1e3


class TvmTimer:
    """The protocol's clock on a board: TVM's time_evaluator around each sample's runs."""

    def __init__(self) -> None:
        self.resolution_ms = host_clock_resolution_ns() / 1e6

    def time(self, run_once: VmSession, inner: int) -> float:
        return run_once.time_ms(inner)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def board_info(tvm) -> dict:
    """What the board is and what it runs: the host's fingerprint of it comes from this."""
    return {
        "device": {**host_fingerprint(), "hostname": socket.gethostname()},
        "runtime": {"tvm": tvm.__version__, "python": platform.python_version(), "numpy": np.__version__,
                    "tvm_num_threads": os.environ.get("TVM_NUM_THREADS", "default")},
        "state": host_state(),
        "runner": RUNNER_PROTOCOL,
    }


def measure(tvm, request: dict) -> dict:
    """Load the library and measure it; the reply says how long loading and the protocol took."""
    started = time.perf_counter()
    try:
        library = tvm.runtime.load_module(request["library"])
    except Exception as e:
        return _failure("runtime", f"the TVM runtime could not load {request['library']}: {_first_line(e)}")
    loaded = time.perf_counter()
    protocol = MeasurementProtocol.from_dict(request["protocol"])
    try:
        latency = measure_rounds(lambda: VmSession(tvm, library, request["inputs"]), protocol,
                                 request["runtime"], TvmTimer())
    except MeasurementError as e:
        return _failure(e.failure, e.message, e.latency.to_dict() if e.latency else None)
    except Exception as e:
        return _failure("runtime", f"the TVM runtime could not run {request['library']}: {_first_line(e)}")
    seconds = {"load": loaded - started, "protocol": time.perf_counter() - loaded}
    return {"ok": True, "latency": latency.to_dict(), "seconds": seconds}


def serve(replies, requests) -> None:
    """Answer requests until "exit" or end of input; a bad request is answered, never fatal."""
    try:
        import tvm
        import tvm.runtime.vm  # noqa: F401  (the Relax VM, without the compiler: see RUNTIME_ONLY_ENV)
    except Exception as e:
        _reply(replies, _failure("device", f"cannot import tvm on the board ({sys.executable}): {_first_line(e)}"))
        return
    _reply(replies, {"ok": True, "runner": RUNNER_PROTOCOL, "info": board_info(tvm)})
    for line in requests:
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "exit":
                _reply(replies, {"ok": True})
                return
            if op != "measure":
                raise ValueError(f"unknown op {op!r}")
            response = measure(tvm, request)
        except Exception as e:
            traceback.print_exc()
            response = _failure("runtime", f"the runner could not handle the request: {_first_line(e)}")
        _reply(replies, response)


def _failure(failure: str, message: str, latency: dict | None = None) -> dict:
    return {"ok": False, "failure": failure, "message": message, "latency": latency}


def _reply(replies, response: dict) -> None:
    replies.write(json.dumps(response, default=float) + "\n")
    replies.flush()


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def pin_to_cores() -> None:
    """Pin the runner to the cores $HILAS_RUNNER_CORES names: its threads so far (numpy's BLAS starts some
    at import) and so every thread TVM starts later."""
    cores = os.environ.get(CORES_ENV)
    if cores:
        threads = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["0"]
        for thread in threads:
            os.sched_setaffinity(int(thread), {int(core) for core in cores.split(",")})


def main() -> None:
    # Replies get a private copy of stdout; fd 1 then points at stderr, so whatever TVM or a
    # library prints cannot corrupt the reply stream.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    pin_to_cores()
    serve(replies, sys.stdin)


if __name__ == "__main__":
    main()
