"""The cuda device kind: the torch ONNX interpreter (on the CPU everywhere, on a GPU where there is one) and the agent.

Runs where only torch, onnx, onnxruntime, numpy and pytest are installed (no Ray, no scikit-learn),
with the repository on PYTHONPATH: see benchmarks/gpu_check.sh.
"""

import importlib.metadata

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from hilas.devices import (
    CudaAgent,
    DeviceUnavailable,
    MeasurementError,
    MeasurementProtocol,
    agent_class,
    export_onnx,
    reference_artifact,
)
from hilas.devices.artifact import ModelArtifact, TensorSpec, example_inputs
from hilas.devices.onnx_torch import OnnxTorchProgram
from hilas.evaluators.default import DigitsResNet

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
SHORT = MeasurementProtocol(warmup_runs=5, warmup_seconds=0.05, min_samples=64, min_seconds=0.05,
                            cooldown_seconds=0, noise_threshold=0.5)


def _hilas_installed() -> bool:
    try:
        importlib.metadata.distribution("hilas")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


class OpsNet(torch.nn.Module):
    """Exports to strided, grouped and dilated convs, both poolings, a BatchNormalization the exporter
    cannot fold (it follows a Concat), Sigmoid, Clip, Concat, Reshape, MatMul, ReduceMean and arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.grouped = torch.nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.dilated = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
        self.avg = torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.max = torch.nn.MaxPool2d(2)
        self.bn = torch.nn.BatchNorm2d(16)
        self.w = torch.nn.Parameter(torch.randn(16 * 4 * 4, 10) * 0.1)
        self.v = torch.nn.Parameter(torch.randn(16, 10))

    def forward(self, x):
        y = torch.relu(self.conv(x))
        a = torch.sigmoid(self.grouped(y))
        b = torch.clamp(self.dilated(y), -0.5, 0.5)
        z = self.max(self.bn(torch.cat([self.avg(a), b * a - 0.25], dim=1))) / 2
        return z.reshape(1, -1) @ self.w + z.mean(dim=(2, 3)) @ self.v


def _ops_net() -> torch.nn.Module:
    torch.manual_seed(0)
    model = OpsNet()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _handmade(nodes, inputs, output, initializers=(), opset=18) -> ModelArtifact:
    """A graph the exporter would not write (asymmetric pads, opset 18's ReduceMean axes input)."""
    graph = helper.make_graph(nodes, "handmade", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                                  for n, s in inputs],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return ModelArtifact("handmade", model.SerializeToString(), tuple(TensorSpec(n, tuple(s)) for n, s in inputs))


def _asymmetric() -> ModelArtifact:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 2, 3, 3)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([3], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], group=2, pads=[0, 1, 1, 2], strides=[2, 1]),
        helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[2, 2], pads=[1, 0, 0, 1]),
        helper.make_node("AveragePool", ["m"], ["a"], kernel_shape=[3, 3], pads=[0, 1, 2, 1], count_include_pad=0),
        helper.make_node("Constant", [], ["k"], value_float=0.5),
        helper.make_node("Mul", ["a", "k"], ["s"]),
        helper.make_node("ReduceMean", ["s", "axes"], ["y"], keepdims=0),
    ]
    return _handmade(nodes, [("x", [1, 4, 9, 10])], "y", [w, axes])


def _digits_resnet() -> ModelArtifact:
    torch.manual_seed(0)
    return export_onnx(DigitsResNet().eval(), torch.randn(1, 1, 8, 8), "digits-resnet")


def _onnxruntime(artifact: ModelArtifact) -> list[np.ndarray]:
    session = ort.InferenceSession(artifact.onnx, providers=["CPUExecutionProvider"])
    return session.run(None, example_inputs(artifact))


def _program(artifact: ModelArtifact, device: str) -> list[np.ndarray]:
    feeds = {name: torch.from_numpy(a).to(device) for name, a in example_inputs(artifact).items()}
    return [t.cpu().numpy() for t in OnnxTorchProgram(artifact.onnx, device)(feeds)]


ARTIFACTS = {
    "digits-resnet": _digits_resnet,
    "ops-net": lambda: export_onnx(_ops_net(), torch.randn(1, 4, 16, 16), "ops-net"),
    "reference": reference_artifact,
    "asymmetric": _asymmetric,
}


# -- OnnxTorchProgram on the CPU --------------------------------------------------


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_program_matches_onnxruntime(name):
    artifact = ARTIFACTS[name]()
    expected = _onnxruntime(artifact)
    got = _program(artifact, "cpu")
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


def test_ops_net_exports_the_ops_it_is_meant_to_cover():
    graph = onnx.load_model_from_string(ARTIFACTS["ops-net"]().onnx).graph
    ops = {n.op_type for n in graph.node}
    assert {"Conv", "MaxPool", "AveragePool", "BatchNormalization", "Sigmoid", "Clip", "Concat", "Reshape",
            "MatMul", "ReduceMean", "Mul", "Sub", "Div", "Add", "Relu"} <= ops
    assert any(a.name == "group" and a.i > 1 for n in graph.node for a in n.attribute)


def test_program_refuses_unsupported_ops_at_build_naming_each():
    nodes = [helper.make_node("Hardmax", ["x"], ["h"]),
             helper.make_node("Einsum", ["h", "h"], ["e"], equation="ij,ij->ij"),
             helper.make_node("Conv", ["e", "w"], ["y"], auto_pad="SAME_UPPER")]
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), dtype=np.float32), "w")
    artifact = _handmade(nodes, [("x", [1, 1, 2, 2])], "y", [w])
    with pytest.raises(MeasurementError) as info:
        OnnxTorchProgram(artifact.onnx, "cpu")
    assert info.value.failure == "runtime"
    message = str(info.value)
    assert "Hardmax" in message and "Einsum" in message and "auto_pad" in message
    assert "onnxruntime-gpu" in message


# -- CudaAgent anywhere -----------------------------------------------------------


@pytest.mark.parametrize("options, match", [
    ({"device_index": -1}, "device_index"),
    ({"device_index": "0"}, "device_index"),
    ({"device_index": True}, "device_index"),
    ({"runtime": "tensorrt"}, "runtime must be one of auto, onnxruntime, torch"),
    ({"cudnn_conv_algo_search": "exhaustive"}, "cudnn_conv_algo_search must be one of EXHAUSTIVE"),
    ({"cudnn_benchmark": "yes"}, "cudnn_benchmark"),
])
def test_agent_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        CudaAgent(**options)


@pytest.mark.skipif(GPU, reason="checks the message on a machine without a GPU")
def test_agent_without_a_gpu_says_so():
    agent = CudaAgent()
    with pytest.raises(DeviceUnavailable, match="no CUDA GPU is visible to this process"):
        agent.prepare()
    with pytest.raises(DeviceUnavailable, match="NVIDIA GPU"):
        agent.info()


@pytest.mark.skipif(not _hilas_installed(), reason="hilas is not pip-installed, so its entry points do not exist")
def test_cuda_is_a_registered_kind():
    assert agent_class("cuda") is CudaAgent
    assert CudaAgent.ray_num_gpus == 1


# -- on a GPU ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_agent():
    agent = CudaAgent(runtime="torch")
    before = torch.backends.cudnn.benchmark
    agent.prepare()
    yield agent
    agent.close()
    assert torch.backends.cudnn.benchmark == before


@needs_gpu
def test_agent_info_names_the_gpu_and_versions(torch_agent):
    info = torch_agent.info()
    assert info["kind"] == "cuda"
    assert info["device"]["gpu"] == torch.cuda.get_device_name(0)
    assert info["device"]["memory_mib"] > 0 and "host" in info["device"]
    runtime = info["runtime"]
    assert runtime["name"] == "torch" and runtime["cuda"] == torch.version.cuda
    assert runtime["cudnn"] == torch.backends.cudnn.version()
    assert runtime["timer"] == "cuda events" and runtime["cudnn_benchmark"] is True
    assert torch.backends.cudnn.benchmark is True


@needs_gpu
@pytest.mark.parametrize("name", ["reference", "digits-resnet"])
def test_agent_measures(torch_agent, name):
    latency = torch_agent.measure(ARTIFACTS[name](), SHORT)
    assert latency.n >= SHORT.rounds * SHORT.min_samples
    assert len(latency.round_medians_ms) == SHORT.rounds
    assert 0 < latency.p10_ms <= latency.median_ms <= latency.p90_ms
    assert "torch" in latency.runtime and "CUDA" in latency.runtime


@needs_gpu
@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_program_on_the_gpu_matches_onnxruntime_on_the_cpu(name):
    artifact = ARTIFACTS[name]()
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # TF32 rounds to 10 bits
    try:
        got = _program(artifact, "cuda")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    for g, e in zip(got, _onnxruntime(artifact)):
        np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4)


@needs_gpu
@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="onnxruntime-gpu is installed")
def test_onnxruntime_runtime_without_onnxruntime_gpu_says_what_to_install():
    with pytest.raises(DeviceUnavailable, match="pip install onnxruntime-gpu"):
        CudaAgent(runtime="onnxruntime").prepare()


@needs_gpu
def test_agent_with_a_device_index_out_of_range_says_so():
    with pytest.raises(DeviceUnavailable, match="device_index"):
        CudaAgent(device_index=torch.cuda.device_count()).prepare()
