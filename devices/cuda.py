"""A CUDA GPU: models run with onnxruntime's CUDA provider, or with PyTorch ops where
onnxruntime-gpu is not installed, and are timed with CUDA events.

A GPU works asynchronously from the host, so the host's clock would time kernel launches, not
kernels. Events recorded on the stream the model runs on, around a batch of runs, time the GPU's
work. Inputs are put on the GPU once and outputs stay there, so host-device copies are never
timed: like onnxruntime-cpu's, the latency is the model's compute.

torch is imported when an agent is made, so this module imports on any machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Callable

import onnxruntime as ort

from .agent import DeviceUnavailable, MeasurementError
from .artifact import ModelArtifact, example_inputs, refuse_custom_ops
from .host import host_fingerprint, host_state, read_text
from .latency import Latency
from .protocol import MeasurementProtocol, measure_rounds

RUNTIMES = ("auto", "onnxruntime", "torch")
CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
CUDA_PROVIDER = "CUDAExecutionProvider"
COPIES = "inputs and outputs stay on the GPU; host-device copies are not timed"


class CudaEventTimer:
    """A Timer reading CUDA events recorded on the current stream: the GPU's time for the runs."""

    resolution_ms = 0.0005  # CUDA documents an event resolution of about 0.5 microseconds

    def __init__(self) -> None:
        import torch

        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def time(self, run_once: Callable[[], None], inner: int) -> float:
        self._start.record()
        for _ in range(inner):
            run_once()
        self._end.record()
        self._end.synchronize()
        return self._start.elapsed_time(self._end)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class CudaAgent:
    """One CUDA GPU. Under the pool, Ray gives the agent's actor one GPU and hides the others
    (CUDA_VISIBLE_DEVICES), so there the GPU is device_index 0.
    """

    kind = "cuda"
    ray_num_gpus = 1  # devices.pool asks Ray for this many GPUs for the agent's actor

    def __init__(self, *, device_index: int = 0, runtime: str = "auto", cudnn_conv_algo_search: str = "EXHAUSTIVE",
                 cudnn_benchmark: bool = True) -> None:
        """runtime "auto" uses onnxruntime where onnxruntime-gpu is installed, else torch.

        cudnn_conv_algo_search applies to onnxruntime, cudnn_benchmark (torch's exhaustive
        algorithm search) to torch.
        """
        if not isinstance(device_index, int) or isinstance(device_index, bool) or device_index < 0:
            raise ValueError(f"device_index must be a whole number >= 0 (a CUDA device number), got {device_index!r}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        if cudnn_conv_algo_search not in CONV_ALGO_SEARCHES:
            raise ValueError(
                f"cudnn_conv_algo_search must be one of {', '.join(CONV_ALGO_SEARCHES)}, got {cudnn_conv_algo_search!r}"
            )
        if not isinstance(cudnn_benchmark, bool):
            raise ValueError(f"cudnn_benchmark must be true or false, got {cudnn_benchmark!r}")
        self.device_index = device_index
        self.runtime = runtime
        self.cudnn_conv_algo_search = cudnn_conv_algo_search
        self.cudnn_benchmark = cudnn_benchmark
        self._stream = None  # the stream models run and events are recorded on, from prepare()
        self._saved_benchmark: bool | None = None

    def info(self) -> dict:
        import torch

        self._check_gpu()
        props = torch.cuda.get_device_properties(self.device_index)
        gpu = _smi_id(props)
        runtime = self._runtime()
        if runtime == "onnxruntime":
            options = {"name": "onnxruntime-gpu", "version": ort.__version__, "providers": [CUDA_PROVIDER],
                       "cudnn_conv_algo_search": self.cudnn_conv_algo_search}
        else:
            options = {"name": "torch", "version": torch.__version__, "cudnn_benchmark": self.cudnn_benchmark,
                       "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                       "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
        clock, temperature = _nvidia_smi("clocks.sm,temperature.gpu", gpu) or (None, None)
        return {
            "kind": self.kind,
            "device": {
                "gpu": props.name,
                "compute_capability": f"{props.major}.{props.minor}",
                "memory_mib": props.total_memory // 2**20,
                "multiprocessors": props.multi_processor_count,
                "driver": _driver_version(gpu),
                "host": host_fingerprint(),
            },
            "runtime": {**options, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                        "timer": "cuda events", "copies": COPIES},
            "state": {**host_state(), "sm_clock_mhz": _whole(clock), "gpu_temperature_c": _whole(temperature)},
        }

    def prepare(self) -> None:
        """Check the GPU and the runtime, make the agent's stream, and set torch's cuDNN algorithm search."""
        import torch

        self._check_gpu()
        if self._runtime() == "torch":
            if self._saved_benchmark is None:  # prepared twice: keep the setting from before the first
                self._saved_benchmark = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        # A stream of its own: onnxruntime takes a user stream only if it is not the default stream (0).
        self._stream = torch.cuda.Stream(self.device_index)

    def measure(self, artifact: ModelArtifact, protocol: MeasurementProtocol) -> Latency:
        import torch

        refuse_custom_ops(artifact, self.kind)
        if self._stream is None:
            raise MeasurementError("device", "the cuda device was not prepared: call prepare() before measure()")
        device = torch.device("cuda", self.device_index)
        runtime = self._runtime()
        arrays = example_inputs(artifact)
        with torch.cuda.device(device), torch.cuda.stream(self._stream):
            try:
                feeds = {name: torch.from_numpy(a).to(device) for name, a in arrays.items()}
                if runtime == "onnxruntime":
                    open_run = self._onnxruntime_run(artifact, feeds, arrays)
                    described = f"onnxruntime-gpu {ort.__version__} ({CUDA_PROVIDER})"
                else:
                    open_run = self._torch_run(artifact, feeds, device)
                    described = (f"torch {torch.__version__} "
                                 f"(CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")
                return measure_rounds(open_run, protocol, described, timer=CudaEventTimer())
            except MeasurementError:
                raise
            except Exception as e:
                raise MeasurementError(
                    "runtime", f"{runtime} could not run {artifact.structure_key} on cuda:{self.device_index}: "
                    f"{type(e).__name__}: {e}"
                ) from e

    def close(self) -> None:
        """Put torch's cuDNN setting back (matters when the agent runs in the caller's process)."""
        if self._saved_benchmark is not None:
            import torch

            torch.backends.cudnn.benchmark = self._saved_benchmark
            self._saved_benchmark = None
        self._stream = None

    def _torch_run(self, artifact: ModelArtifact, feeds: dict, device) -> Callable[[], Callable[[], None]]:
        from .onnx_torch import OnnxTorchProgram

        def open_run():  # a fresh program (weights copied to the GPU again) per round
            program = OnnxTorchProgram(artifact.onnx, device)
            return lambda: program(feeds)

        return open_run

    def _onnxruntime_run(self, artifact: ModelArtifact, feeds: dict, arrays: dict) -> Callable[[], Callable[[], None]]:
        provider_options = {
            "device_id": self.device_index,
            "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
            "user_compute_stream": str(self._stream.cuda_stream),  # onnxruntime runs on the events' stream
            "has_user_compute_stream": "1",
        }

        def open_run():  # a fresh session per round
            session = ort.InferenceSession(artifact.onnx, providers=[(CUDA_PROVIDER, provider_options)])
            if session.get_providers()[0] != CUDA_PROVIDER:
                raise MeasurementError(
                    "runtime", f"onnxruntime {ort.__version__} could not start its CUDA provider (the session has "
                    f"{session.get_providers()}), so it would run on the CPU: install the CUDA and cuDNN versions "
                    f"this onnxruntime-gpu needs, or set the device's runtime option to 'torch'"
                )
            binding = session.io_binding()
            for name, tensor in feeds.items():
                binding.bind_input(name, "cuda", self.device_index, arrays[name].dtype.type, tuple(tensor.shape),
                                   tensor.data_ptr())
            for output in session.get_outputs():
                binding.bind_output(output.name, "cuda", self.device_index)
            return lambda: session.run_with_iobinding(binding)

        return open_run

    def _check_gpu(self) -> None:
        import torch

        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        if torch.version.cuda is None or not torch.cuda.is_available():
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise DeviceUnavailable(
                f"cuda device: no CUDA GPU is visible to this process (torch {torch.__version__} is {build}; "
                f"CUDA_VISIBLE_DEVICES={visible}): run on a machine with an NVIDIA GPU and a CUDA build of torch, "
                f"or remove the device"
            )
        count = torch.cuda.device_count()
        if self.device_index >= count:
            raise DeviceUnavailable(
                f"cuda device: device_index {self.device_index} does not exist: this process sees {count} CUDA "
                f"GPU(s) (CUDA_VISIBLE_DEVICES={visible}): set device_index to 0..{count - 1}"
            )

    def _runtime(self) -> str:
        """The runtime in force: "onnxruntime" or "torch"."""
        available = ort.get_available_providers()
        if self.runtime == "auto":
            return "onnxruntime" if CUDA_PROVIDER in available else "torch"
        if self.runtime == "onnxruntime" and CUDA_PROVIDER not in available:
            raise DeviceUnavailable(
                f"cuda device: runtime 'onnxruntime' needs onnxruntime's {CUDA_PROVIDER}, which onnxruntime "
                f"{ort.__version__} here lacks (it has {', '.join(available)}): pip install onnxruntime-gpu (in "
                f"place of onnxruntime), or set the device's runtime option to 'torch'"
            )
        return self.runtime


def _smi_id(props) -> str:
    """The GPU's UUID as nvidia-smi -i takes it (CUDA's device numbers need not match nvidia-smi's)."""
    uuid = str(props.uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def _nvidia_smi(fields: str, gpu: str) -> list[str] | None:
    """One GPU's values of nvidia-smi --query-gpu fields, or None when nvidia-smi does not answer."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", gpu],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return [v.strip() for v in out.splitlines()[0].split(",")] if out else None


def _whole(reading: str | None) -> int | None:
    return int(reading) if reading and reading.isdigit() else None


def _driver_version(gpu: str) -> str:
    """The NVIDIA driver's version: from /proc where the kernel module shows it, else from nvidia-smi."""
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", read_text("/proc/driver/nvidia/version") or "")
    if match:
        return match.group(1)
    answer = _nvidia_smi("driver_version", gpu)
    return answer[0] if answer else "unknown"
