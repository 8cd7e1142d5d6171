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

from hilas.devices import (
    HARNESS_VERSION,
    LOCAL_CPU,
    DeviceSpec,
    DeviceUnavailable,
    DriftCheckedAgent,
    Latency,
    MeasurementError,
    MeasurementProtocol,
    ModelArtifact,
    OnnxRuntimeCpuAgent,
    TensorSpec,
    VirtualAgent,
    agent_class,
    export_onnx,
    fingerprint,
    make_agent,
    measure_rounds,
    reference_artifact,
    summarize,
)
from hilas.devices.virtual import graph_mflops

QUICK = MeasurementProtocol(warmup_runs=2, warmup_seconds=0.0, min_samples=20, min_seconds=0.0, max_seconds=2.0,
                            cooldown_seconds=0.0, noise_threshold=0.5)


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
    rounds = [[5.0, 1.0, 4.0, 2.0], [3.0, 10.0, 2.5], [3.5, 4.5, 1.5]]
    lat = summarize(rounds, warmup_runs=7, runtime="test", inner_runs=2, attempts=3)
    a = np.concatenate([np.array(r) for r in rounds])
    medians = np.array([np.median(r) for r in rounds])
    assert lat.median_ms == pytest.approx(np.median(medians))
    assert lat.round_medians_ms == pytest.approx(tuple(medians))
    assert lat.rounds_cv == pytest.approx(medians.std() / medians.mean())
    for got, q in ((lat.p10_ms, 10), (lat.p90_ms, 90), (lat.p99_ms, 99)):
        assert got == pytest.approx(np.percentile(a, q))
    assert (lat.mean_ms, lat.std_ms, lat.min_ms, lat.max_ms) == pytest.approx((a.mean(), a.std(), 1.0, 10.0))
    assert lat.cv == pytest.approx(a.std() / a.mean())
    assert (lat.n, lat.warmup_runs, lat.inner_runs, lat.attempts) == (10, 7, 2, 3)
    assert lat.samples_ms == tuple(tuple(r) for r in rounds)


@pytest.mark.parametrize("rounds", [[], [[]], [[1.0], []], [[1.0, float("nan")]], [[1.0, float("inf")]],
                                    [[1.0, -0.5]]])
def test_summarize_refuses_bad_samples(rounds):
    with pytest.raises(ValueError, match="runtime 'rt'"):
        summarize(rounds, warmup_runs=0, runtime="rt")


def test_latency_round_trips_through_json_and_a_database_record():
    lat = summarize([[1.0, 2.0, 4.0], [0.5, 0.25]], warmup_runs=3, runtime="rt")
    assert Latency.from_dict(json.loads(json.dumps(lat.to_dict()))) == lat
    bare = Latency.from_dict(json.loads(json.dumps(lat.to_dict(samples=False))))
    assert bare.samples_ms == () and bare.median_ms == lat.median_ms
    summary, blob = lat.to_record()
    assert len(blob) == 4 * lat.n and Latency.from_record(summary, blob) == lat  # exact in float32


# -- MeasurementProtocol -----------------------------------------------------


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"min_samples": 0}, "min_samples"),
        ({"warmup_runs": -1}, "warmup_runs"),
        ({"max_seconds": 0}, "max_seconds"),
        ({"min_samples": 100, "max_samples": 10}, "min_samples"),
        ({"min_seconds": 9.0, "max_seconds": 1.0}, "min_seconds"),
        ({"rounds": 0}, "rounds"),
        ({"rounds": 2.5}, "rounds"),
        ({"noise_threshold": -0.1}, "noise_threshold"),
        ({"drift_check_every": 0}, "drift_check_every"),
        ({"cooldown_seconds": float("nan")}, "cooldown_seconds"),
        ({"min_seconds": True}, "min_seconds"),
    ],
)
def test_protocol_refuses_bad_settings(settings, field):
    with pytest.raises(ValueError, match=field):
        MeasurementProtocol(**settings)


def test_protocol_round_trips_and_refuses_unknown_settings():
    assert MeasurementProtocol.from_dict(QUICK.to_dict()) == QUICK
    with pytest.raises(ValueError, match="min_sample"):
        MeasurementProtocol.from_dict({"min_sample": 3})
    assert QUICK.updated({"rounds": 5}).rounds == 5 and QUICK.updated({}) == QUICK


def test_protocol_defaults_are_the_documented_ones():
    p = MeasurementProtocol()
    assert (p.warmup_runs, p.warmup_seconds, p.min_samples, p.min_seconds) == (10, 1.0, 64, 1.0)
    assert (p.rounds, p.noise_threshold, p.drift_threshold) == (3, 0.05, 0.05)


class FakeTimer:
    """A Timer on which each run takes `step_ms[round]` (one entry per fresh session opened)."""

    def __init__(self, *step_ms: float, resolution_ms: float = 1e-6) -> None:
        self.steps = list(step_ms)
        self.resolution_ms = resolution_ms
        self.sessions = 0
        self.runs = 0
        self.slept = 0.0

    def open_run(self):
        self.sessions += 1
        return lambda: None

    def time(self, run_once, inner: int) -> float:
        self.runs += inner
        return self.steps[(self.sessions - 1) % len(self.steps)] * inner

    def sleep(self, seconds: float) -> None:
        self.slept += seconds


ONE_ROUND = dict(rounds=1, cooldown_seconds=0.0)


@pytest.mark.parametrize(
    "settings, warmups, samples",
    [
        # counts dominate: 3 warm-ups, 7 samples
        (dict(warmup_runs=3, warmup_seconds=0.0, min_samples=7, min_seconds=0.0), 3, 7),
        # durations dominate: 50 ms of warm-up and 100 ms of samples at 10 ms a run
        (dict(warmup_runs=1, warmup_seconds=0.05, min_samples=2, min_seconds=0.1), 5, 10),
        # max_samples caps before min_seconds is reached
        (dict(warmup_runs=0, warmup_seconds=0.0, min_samples=5, min_seconds=1.0, max_samples=20), 1, 20),
        # max_seconds caps before min_samples is reached
        (dict(warmup_runs=0, warmup_seconds=0.0, min_samples=1000, min_seconds=0.0, max_seconds=0.3), 1, 30),
    ],
)
def test_measure_rounds_honours_minimums_and_caps(settings, warmups, samples):
    timer = FakeTimer(10.0)
    lat = measure_rounds(timer.open_run, MeasurementProtocol(**settings, **ONE_ROUND), "fake", timer)
    assert (lat.warmup_runs, lat.n, timer.runs) == (warmups, samples, warmups + samples)
    assert lat.samples_ms == ((10.0,) * samples,)


def test_each_round_opens_a_fresh_session_after_a_cooldown():
    timer = FakeTimer(1.0, 1.1, 0.9)
    protocol = MeasurementProtocol(warmup_runs=2, warmup_seconds=0, min_samples=4, min_seconds=0, rounds=3,
                                   cooldown_seconds=0.5, noise_threshold=0.2)
    lat = measure_rounds(timer.open_run, protocol, "fake", timer)
    assert timer.sessions == 3 and timer.slept == pytest.approx(1.0)
    assert lat.round_medians_ms == pytest.approx((1.0, 1.1, 0.9)) and lat.median_ms == pytest.approx(1.0)
    assert (lat.n, lat.attempts) == (12, 1)


def test_runs_shorter_than_the_timer_resolves_are_timed_in_batches():
    timer = FakeTimer(0.001, resolution_ms=0.0005)  # 1 us runs on a 0.5 us clock: 50 runs a sample
    protocol = MeasurementProtocol(warmup_runs=1, warmup_seconds=0, min_samples=10, min_seconds=0, **ONE_ROUND)
    lat = measure_rounds(timer.open_run, protocol, "fake", timer)
    assert lat.inner_runs == 50 and lat.n == 10 and lat.median_ms == pytest.approx(0.001)
    assert timer.runs == 1 + 50 * 10


def test_rounds_that_disagree_are_measured_again_then_reported_as_noise():
    steps = [1.0, 2.0]  # every other session is twice as slow: the rounds never agree
    timer = FakeTimer(*steps)
    protocol = MeasurementProtocol(warmup_runs=1, warmup_seconds=0, min_samples=3, min_seconds=0, rounds=2,
                                   cooldown_seconds=0, max_remeasures=2)
    with pytest.raises(MeasurementError, match="noisy.*1, 2 ms vary by 33.3%.*3 attempts") as info:
        measure_rounds(timer.open_run, protocol, "fake", timer)
    assert info.value.failure == "noisy" and timer.sessions == 6
    assert info.value.latency.round_medians_ms == (1.0, 2.0)  # the evidence is kept
    calm = FakeTimer(1.0, 2.0, 1.0, 1.0)  # the second attempt agrees
    lat = measure_rounds(calm.open_run, protocol, "fake", calm)
    assert lat.attempts == 2 and lat.median_ms == 1.0


# -- export and the onnxruntime-cpu agent -------------------------------------


def test_export_describes_the_model(tiny):
    _, _, artifact = tiny
    assert artifact.structure_key == "tiny-w4"
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
            warnings.warn("a warning the user must see", UserWarning, stacklevel=1)
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
    assert info.value.failure == "export"


def test_onnxruntime_agent_measures(tiny):
    agent = OnnxRuntimeCpuAgent()
    agent.prepare()
    try:
        lat = agent.measure(tiny[2], QUICK)
    finally:
        agent.close()
    assert len(lat.samples_ms) == QUICK.rounds and all(len(r) >= QUICK.min_samples for r in lat.samples_ms)
    assert sum(len(r) for r in lat.samples_ms) == lat.n
    assert 0 < lat.p10_ms <= lat.median_ms <= lat.p90_ms
    assert lat.warmup_runs >= QUICK.warmup_runs
    assert lat.runtime.startswith(f"onnxruntime {ort.__version__}")


def test_onnxruntime_agent_reports_a_corrupt_model(tiny):
    corrupt = ModelArtifact("corrupt-1", b"not an onnx model", tiny[2].inputs)
    with pytest.raises(MeasurementError, match="corrupt-1") as info:
        OnnxRuntimeCpuAgent().measure(corrupt, QUICK)
    assert info.value.failure == "runtime"


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
    runtime = info["runtime"]
    assert (runtime["version"], runtime["providers"]) == (ort.__version__, ["CPUExecutionProvider"])
    assert (runtime["intra_op_threads"], runtime["inter_op_threads"]) == (1, 1)
    if len(before) > 1:
        assert (runtime["cores"], runtime["pinning"]) == ([max(before)], "pinned")
    else:
        assert runtime["pinning"].startswith("not pinned")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_onnxruntime_agent_refuses_cores_the_machine_lacks():
    with pytest.raises(DeviceUnavailable, match="cpu_affinity"):
        OnnxRuntimeCpuAgent(cpu_affinity=[100_000]).prepare()


# -- fingerprints -----------------------------------------------------------------


def test_fingerprint_follows_device_and_runtime_but_not_state():
    info = OnnxRuntimeCpuAgent().info()
    assert fingerprint(info) == fingerprint({**info, "state": {"load_average": [9.9, 9.9, 9.9]}})
    assert fingerprint(info) != fingerprint({**info, "runtime": {**info["runtime"], "version": "0.0.1"}})
    assert fingerprint(info) != fingerprint({**info, "device": {**info["device"], "cpu_model": "Cortex-A72"}})
    assert fingerprint(info) != fingerprint(OnnxRuntimeCpuAgent(intra_op_threads=2).info())
    assert {"cpu_model", "cores", "frequency_governor", "os"} <= set(info["device"])


# -- drift checks ----------------------------------------------------------------


def test_the_reference_model_is_fixed_and_runs(tiny):
    assert reference_artifact().sha256 == reference_artifact.__wrapped__().sha256  # same bytes when rebuilt
    lat = OnnxRuntimeCpuAgent().measure(reference_artifact(), QUICK)
    assert lat.median_ms > 0


class Throttles:
    """A device that runs at `ms` until `slow_after` measurements, then 30 % slower (thermal throttling)."""

    def __init__(self, ms: float = 1.0, slow_after: int = 10**9) -> None:
        self.ms, self.slow_after, self.measured = ms, slow_after, []

    def measure(self, artifact, protocol):
        self.measured.append(artifact.structure_key)
        ms = self.ms * (1.3 if len(self.measured) > self.slow_after else 1.0)
        return summarize([[ms] * 3], warmup_runs=0, runtime="throttles")


def test_a_steady_device_measures_each_batch_once_between_two_references(tiny):
    device = Throttles()
    results = DriftCheckedAgent(device).measure_batch([tiny[2], tiny[2]], QUICK)
    assert device.measured == ["hilas-reference-v1", "tiny-w4", "tiny-w4", "hilas-reference-v1"]
    assert all(r.reference_ms == (1.0, 1.0) and r.drift == 0.0 for r in results)
    assert results[0].protocol == QUICK.to_dict() and results[0].harness == HARNESS_VERSION


def test_drift_repeats_the_batch_and_is_recorded(tiny):
    device = Throttles(slow_after=2)  # the reference, one model, then everything is slower
    results = DriftCheckedAgent(device).measure_batch([tiny[2], tiny[2]], QUICK)
    assert device.measured == ["hilas-reference-v1", "tiny-w4", "tiny-w4", "hilas-reference-v1",
                               "tiny-w4", "tiny-w4", "hilas-reference-v1"]
    # the repeat is measured at one speed, between references that agree: drift 0, history kept
    assert all(r.median_ms == pytest.approx(1.3) for r in results)
    assert results[0].reference_ms == pytest.approx((1.0, 1.3, 1.3)) and results[0].drift == 0.0


def test_a_device_that_cannot_run_the_reference_still_measures(tiny):
    class NoReference(Throttles):
        def measure(self, artifact, protocol):
            if artifact.structure_key == "hilas-reference-v1":
                raise MeasurementError("compile", "unsupported")
            return super().measure(artifact, protocol)

    checked = DriftCheckedAgent(NoReference())
    (result,) = checked.measure_batch([tiny[2]], QUICK)
    assert result.median_ms == 1.0 and result.reference_ms == () and result.drift is None
    assert "unsupported" in checked.reference_error


# -- the virtual agent ---------------------------------------------------------


def test_graph_mflops_counts_conv_and_gemm(tiny):
    conv = 4 * 8 * 8 * (3 * 3 * 3)  # output elements * (Cin * kh * kw)
    fc = 5 * 4
    assert graph_mflops(tiny[2].onnx) == pytest.approx(2 * (conv + fc) / 1e6)


def test_virtual_agent_latency_follows_flops_and_is_reproducible(tiny):
    wide = export_onnx(TinyNet(width=16), torch.randn(1, 3, 8, 8), "tiny-w16")
    exact = VirtualAgent(ms_per_mflop=2.0).measure(tiny[2], QUICK)
    assert exact.median_ms == pytest.approx(2.0 * graph_mflops(tiny[2].onnx))
    assert exact.n == QUICK.rounds * QUICK.min_samples and exact.std_ms == pytest.approx(0, abs=1e-12)
    noisy = VirtualAgent(noise_cv=0.1)
    assert noisy.measure(tiny[2], QUICK) == noisy.measure(tiny[2], QUICK)
    assert noisy.measure(tiny[2], QUICK).std_ms > 0
    assert noisy.measure(wide, QUICK).median_ms > noisy.measure(tiny[2], QUICK).median_ms


def test_virtual_agent_reports_a_corrupt_model(tiny):
    with pytest.raises(MeasurementError, match="corrupt-2") as info:
        VirtualAgent().measure(ModelArtifact("corrupt-2", b"\x00garbage", tiny[2].inputs), QUICK)
    assert info.value.failure == "runtime"


# -- errors --------------------------------------------------------------------


def test_measurement_error_is_one_line_and_crosses_processes():
    error = MeasurementError("compile", "no schedule for\n  conv2d")
    assert str(error) == "compile error: no schedule for conv2d"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.failure, copy.message, copy.latency) == ("compile", "no schedule for\n  conv2d", None)
    evidence = summarize([[1.0], [2.0]], warmup_runs=0, runtime="rt")
    assert pickle.loads(pickle.dumps(MeasurementError("noisy", "rounds disagree", evidence))).latency == evidence
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
        return summarize([[self.ms] * protocol.min_samples], warmup_runs=0, runtime="my-kind")

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
