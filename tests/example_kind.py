"""A new device kind in about ten lines: onnxruntime on this CPU with a chosen number of threads.

    hilas devices add cpu4 --kind tests.example_kind:ThreadedCpu -o threads=4
    hilas devices check cpu4

Installed packages register a kind by name instead, in their pyproject.toml:
[project.entry-points."hilas.devices"] threaded-cpu = "mypackage.kinds:ThreadedCpu".
"""

import onnxruntime as ort

from hilas.devices import example_inputs, host_fingerprint, measure_rounds


class ThreadedCpu:
    def __init__(self, threads: int = 1):  # the device's options, as in `-o threads=4`
        self.threads = threads

    def info(self):  # latencies are cached under a hash of "device" and "runtime"
        return {"kind": "threaded-cpu", "device": host_fingerprint(),
                "runtime": {"name": "onnxruntime", "version": ort.__version__, "threads": self.threads}}

    def prepare(self): ...

    def close(self): ...

    def measure(self, artifact, protocol):  # the shared protocol: warm-up, rounds, noise check
        def open_run():  # a fresh session for each round
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            session = ort.InferenceSession(artifact.onnx, options, providers=["CPUExecutionProvider"])
            feeds = example_inputs(artifact)
            return lambda: session.run(None, feeds)

        return measure_rounds(open_run, protocol, f"onnxruntime {ort.__version__} ({self.threads} threads)")
