"""devices without Ray: statistics, the measurement protocol, export, agents, registry."""

import hashlib
import json
import os
import pickle
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from devices import (
    LOCAL_CPU,
    DeviceSpec,
    DeviceUnavailable,
    Latency,
    MeasurementError,
    MeasurementProtocol,
    ModelArtifact,
    OnnxRuntimeCpuAgent,
    TensorSpec,
    VirtualAgent,
    agent_class,
    export_onnx,
    make_agent,
    measure_callable,
    summarize,
)
from devices.latency import summarize as _summarize
from devices.virtual import graph_mflops

QUICK = MeasurementProtocol(warmup_runs=2, warmup_seconds=0.0, min_samples=20, min_seconds=0.0, max_seconds=2.0)


class TinyNet(torch.nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, width, 3, padding=1)
        self.fc = torch.nn.Linear(width, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = TinyNet()
    example = torch.randn(1, 3, 8, 8)
    return model, example, export_onnx(model, example, "tiny-w4")


# -- Latency -------------------------------------------------------------------


def test_summarize_matches_numpy():
    samples = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 2.5, 3.5, 4.5, 1.5]
    lat = summarize(samples, warmup_runs=7, runtime="test")
    a = np.array(samples)
    assert lat.median_ms == pytest.approx(np.median(a))
    assert lat.p10_ms == pytest.approx(np.percentile(a, 10))
    assert lat.p90_ms == pytest.approx(np.percentile(a, 90))
    assert lat.mean_ms == pytest.approx(a.mean())
    assert lat.std_ms == pytest.approx(a.std())
    assert lat.cv == pytest.approx(a.std() / a.mean())
    assert (lat.n, lat.samples_ms, lat.warmup_runs, lat.runtime) == (10, tuple(samples), 7, "test")


@pytest.mark.parametrize("samples", [[], [1.0, float("nan")], [1.0, float("inf")], [1.0, -0.5]])
def test_summarize_refuses_bad_samples(samples):
    with pytest.raises(ValueError, match="runtime 'rt'"):
        summarize(samples, warmup_runs=0, runtime="rt")


def test_latency_round_trips_through_json():
    lat = summarize([1.0, 2.0, 4.0], warmup_runs=3, runtime="rt")
    assert Latency.from_dict(json.loads(json.dumps(lat.to_dict()))) == lat


# -- MeasurementProtocol -----------------------------------------------------


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"min_samples": 0}, "min_samples"),
        ({"warmup_runs": -1}, "warmup_runs"),
        ({"max_seconds": 0}, "max_seconds"),
        ({"min_samples": 100, "max_samples": 10}, "min_samples"),
        ({"min_seconds": 9.0, "max_seconds": 1.0}, "min_seconds"),
    ],
)
def test_protocol_refuses_bad_settings(settings, field):
    with pytest.raises(ValueError, match=field):
        MeasurementProtocol(**settings)


def test_protocol_round_trips_and_refuses_unknown_settings():
    assert MeasurementProtocol.from_dict(QUICK.to_dict()) == QUICK
    with pytest.raises(ValueError, match="min_sample"):
        MeasurementProtocol.from_dict({"min_sample": 3})


class FakeClock:
    """Stands in for the time module: each run of the model takes exactly `step_ms`."""

    def __init__(self, step_ms: float) -> None:
        self.now_ns = 0
        self.step_ns = int(step_ms * 1e6)
        self.runs = 0

    def perf_counter_ns(self) -> int:
        return self.now_ns

    def run_once(self) -> None:
        self.runs += 1
        self.now_ns += self.step_ns


@pytest.mark.parametrize(
    "settings, warmups, samples",
    [
        # counts dominate: 3 warm-ups, 7 samples
        (dict(warmup_runs=3, warmup_seconds=0.0, min_samples=7, min_seconds=0.0), 3, 7),
        # durations dominate: 50 ms of warm-up and 100 ms of samples at 10 ms a run
        (dict(warmup_runs=1, warmup_seconds=0.05, min_samples=2, min_seconds=0.1), 5, 10),
        # max_samples caps before min_seconds is reached
        (dict(warmup_runs=0, warmup_seconds=0.0, min_samples=5, min_seconds=1.0, max_samples=20), 0, 20),
        # max_seconds caps before min_samples is reached
        (dict(warmup_runs=0, warmup_seconds=0.0, min_samples=1000, min_seconds=0.0, max_seconds=0.3), 0, 30),
    ],
)
def test_measure_callable_honours_minimums_and_caps(monkeypatch, settings, warmups, samples):
    clock = FakeClock(step_ms=10)
    monkeypatch.setattr("devices.protocol.time", clock)
    lat = measure_callable(clock.run_once, MeasurementProtocol(**settings), runtime="fake")
    assert (lat.warmup_runs, lat.n, clock.runs) == (warmups, samples, warmups + samples)
    assert lat.samples_ms == (10.0,) * samples


# -- export and the onnxruntime-cpu agent -------------------------------------


def test_export_describes_the_model(tiny):
    _, _, artifact = tiny
    assert artifact.arch_key == "tiny-w4"
    assert artifact.inputs == (TensorSpec("input", (1, 3, 8, 8), "float32"),)
    assert artifact.sha256 == hashlib.sha256(artifact.onnx).hexdigest()


def test_exported_model_computes_what_torch_computes(tiny):
    model, example, artifact = tiny
    session = ort.InferenceSession(artifact.onnx, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits"]
    (ours,) = session.run(None, {"input": example.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(ours, model(example).numpy(), rtol=1e-4, atol=1e-5)


def test_export_silences_only_the_dynamo_false_warning():
    class Noisy(TinyNet):
        def forward(self, x):
            warnings.warn("a warning the user must see", UserWarning)
            return super().forward(x)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(Noisy(), torch.randn(1, 3, 8, 8), "noisy")
    messages = [str(w.message) for w in caught]
    assert "a warning the user must see" in messages
    assert not [m for m in messages if "TorchScript-based ONNX export" in m]


def test_export_failure_is_a_measurement_error():
    class Broken(TinyNet):
        def forward(self, x):
            raise RuntimeError("unsupported layer")

    with pytest.raises(MeasurementError, match="broken-1.*unsupported layer") as info:
        export_onnx(Broken(), torch.randn(1, 3, 8, 8), "broken-1")
    assert info.value.kind == "export"


def test_onnxruntime_agent_measures(tiny):
    agent = OnnxRuntimeCpuAgent()
    agent.prepare()
    try:
        lat = agent.measure(tiny[2], QUICK)
    finally:
        agent.close()
    assert lat.n >= QUICK.min_samples and len(lat.samples_ms) == lat.n
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert lat.warmup_runs >= QUICK.warmup_runs
    assert lat.runtime.startswith(f"onnxruntime {ort.__version__}")


def test_onnxruntime_agent_reports_a_corrupt_model(tiny):
    corrupt = ModelArtifact("corrupt-1", b"not an onnx model", tiny[2].inputs)
    with pytest.raises(MeasurementError, match="corrupt-1") as info:
        OnnxRuntimeCpuAgent().measure(corrupt, QUICK)
    assert info.value.kind == "runtime"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity")
def test_onnxruntime_agent_pins_to_the_last_core_and_gives_it_back():
    before = os.sched_getaffinity(0)
    agent = OnnxRuntimeCpuAgent()
    agent.prepare()
    try:
        info = agent.info()
    finally:
        agent.close()
    assert os.sched_getaffinity(0) == before
    assert info["runtime_version"] == ort.__version__ and info["providers"] == ["CPUExecutionProvider"]
    assert info["options"] == {"intra_op_threads": 1, "inter_op_threads": 1, "cpu_affinity": None}
    if len(before) > 1:
        assert (info["cpu_affinity"], info["pinning"]) == ([max(before)], "pinned")
    else:
        assert info["pinning"].startswith("not pinned")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_onnxruntime_agent_refuses_cores_the_machine_lacks():
    with pytest.raises(DeviceUnavailable, match="cpu_affinity"):
        OnnxRuntimeCpuAgent(cpu_affinity=[100_000]).prepare()


# -- the virtual agent ---------------------------------------------------------


def test_graph_mflops_counts_conv_and_gemm(tiny):
    conv = 4 * 8 * 8 * (3 * 3 * 3)  # output elements * (Cin * kh * kw)
    fc = 5 * 4
    assert graph_mflops(tiny[2].onnx) == pytest.approx(2 * (conv + fc) / 1e6)


def test_virtual_agent_latency_follows_flops_and_is_reproducible(tiny):
    wide = export_onnx(TinyNet(width=16), torch.randn(1, 3, 8, 8), "tiny-w16")
    exact = VirtualAgent(ms_per_mflop=2.0).measure(tiny[2], QUICK)
    assert exact.median_ms == pytest.approx(2.0 * graph_mflops(tiny[2].onnx))
    assert exact.n == QUICK.min_samples and exact.std_ms == pytest.approx(0, abs=1e-12)
    noisy = VirtualAgent(noise_cv=0.1)
    assert noisy.measure(tiny[2], QUICK) == noisy.measure(tiny[2], QUICK)
    assert noisy.measure(tiny[2], QUICK).std_ms > 0
    assert noisy.measure(wide, QUICK).median_ms > noisy.measure(tiny[2], QUICK).median_ms


def test_virtual_agent_reports_a_corrupt_model(tiny):
    with pytest.raises(MeasurementError, match="corrupt-2") as info:
        VirtualAgent().measure(ModelArtifact("corrupt-2", b"\x00garbage", tiny[2].inputs), QUICK)
    assert info.value.kind == "runtime"


# -- errors --------------------------------------------------------------------


def test_measurement_error_is_one_line_and_crosses_processes():
    error = MeasurementError("compile", "no schedule for\n  conv2d")
    assert str(error) == "compile error: no schedule for conv2d"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.kind, copy.message) == ("compile", "no schedule for\n  conv2d")
    with pytest.raises(ValueError, match="crash"):
        MeasurementError("crash", "x")


# -- registry --------------------------------------------------------------------


class MyKind:
    """A complete new device kind: a fixed 1 ms 'device'."""

    def __init__(self, *, ms: float = 1.0) -> None:
        self.ms = ms

    def info(self) -> dict:
        return {"kind": "my-kind", "ms": self.ms}

    def prepare(self) -> None:
        pass

    def measure(self, artifact, protocol):
        return _summarize([self.ms] * protocol.min_samples, warmup_runs=0, runtime="my-kind")

    def close(self) -> None:
        pass


def test_a_new_kind_is_a_module_class_path(tiny):
    agent = make_agent(DeviceSpec("mine", "tests.test_devices:MyKind", {"ms": 3.0}))
    assert agent.measure(tiny[2], QUICK).median_ms == 3.0


def test_installed_kinds_resolve():
    assert agent_class(LOCAL_CPU.kind) is OnnxRuntimeCpuAgent
    assert agent_class("virtual") is VirtualAgent


def test_unknown_kind_lists_the_known_kinds():
    with pytest.raises(ValueError, match="'tpu'.*onnxruntime-cpu.*virtual"):
        agent_class("tpu")
    with pytest.raises(ValueError, match="NoSuchClass.*tests.test_devices"):
        agent_class("tests.test_devices:NoSuchClass")


def test_bad_options_name_the_device_and_the_option():
    with pytest.raises(ValueError, match="'cpu0'.*intra_threads"):
        make_agent(DeviceSpec("cpu0", "onnxruntime-cpu", {"intra_threads": 2}))
    with pytest.raises(ValueError, match="'cpu0'.*intra_op_threads"):
        make_agent(DeviceSpec("cpu0", "onnxruntime-cpu", {"intra_op_threads": 0}))
