"""Binary widths: the 1-bit kernel against a reference, the torch model against the same reference, the
export and who refuses it, the space, the supernet, the tvm-cpu kind and a width search through Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hilas.devices import CudaAgent, MeasurementError, MeasurementProtocol, OnnxRuntimeCpuAgent, export_onnx, tvm_binary
from hilas.devices.tvm_cpu import TvmCpuAgent
from hilas.evaluators.supernet import SupernetTraining, WidthChoices, cached_supernet
from hilas.spaces import model_stats
from hilas.spaces.binary import BinaryConv2d, BinaryWidthSpace, BiRealNet, inherit

HOST = {"kind": "llvm"}
QUICK = MeasurementProtocol(warmup_runs=2, warmup_seconds=0.0, min_samples=8, min_seconds=0.0, max_seconds=1.0,
                            rounds=2, cooldown_seconds=0.0, noise_threshold=1.0)


def reference(x: np.ndarray, weight: np.ndarray, scale: np.ndarray, bias: np.ndarray, stride: int,
              pad: int) -> np.ndarray:
    """The +-1 convolution in float64, unpacked: scale * conv(sign(x), W) + bias, sign(0) = +1, zero padding."""
    signs = np.where(x >= 0, 1.0, -1.0)
    out = F.conv2d(torch.from_numpy(signs), torch.from_numpy(weight.astype(np.float64)), stride=stride, padding=pad)
    return out.numpy() * scale[None, :, None, None] + bias[None, :, None, None]


def random_case(rng: np.random.Generator, n: int, c: int, h: int, w: int, oc: int, k: int):
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = 0.0  # exact zeros: sign(0) must be +1 on both sides
    weight = np.where(rng.random((oc, c, k, k)) < 0.5, -1.0, 1.0).astype(np.float32)
    scale = rng.uniform(0.1, 2.0, oc).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    return x, weight, scale, bias


@pytest.mark.parametrize("n, c, h, w, oc, k, stride, pad", [
    (1, 32, 8, 8, 32, 3, 1, 1),
    (2, 64, 7, 5, 96, 3, 2, 1),  # odd sizes, a batch, stride 2: the borders differ per position
    (1, 96, 4, 4, 48, 3, 1, 0),  # no padding, output channels not a multiple of 32
    (1, 128, 6, 6, 40, 1, 1, 0),  # a 1x1 kernel; 40 channels take 8-lane vectors
    (1, 32, 9, 9, 64, 5, 2, 2),
])
def test_the_packed_kernel_computes_the_unpacked_reference(n, c, h, w, oc, k, stride, pad):
    import tvm
    from tvm import relax

    rng = np.random.default_rng(c * oc + k)
    x, weight, scale, bias = random_case(rng, n, c, h, w, oc, k)
    bb = relax.BlockBuilder()
    data = relax.Var("x", relax.TensorType((n, c, h, w), "float32"))
    with bb.function("main", [data]):
        with bb.dataflow():
            out = bb.emit_output(tvm_binary.emit_binary_conv2d(bb, data, weight, scale, bias, (stride, stride),
                                                               (pad,) * 4))
        bb.emit_func_output(out)
    vm = relax.VirtualMachine(tvm.compile(bb.get(), tvm.target.Target(HOST)), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()
    np.testing.assert_allclose(got, reference(x, weight, scale, bias, stride, pad), rtol=1e-5, atol=1e-4)


def test_weights_pack_in_topis_bit_order():
    weight = -np.ones((1, 64, 1, 1), dtype=np.float32)
    weight[0, [0, 33], 0, 0] = 1.0  # channel 32 q + k is bit 31 - k of word q
    assert tvm_binary.pack_weights(weight)[:, 0, 0, 0].tolist() == [1 << 31, 1 << 30]
    with pytest.raises(ValueError, match="multiples of 32"):
        tvm_binary.pack_weights(np.ones((1, 48, 3, 3)))


def test_the_torch_layer_computes_the_reference_and_trains_through_the_signs():
    torch.manual_seed(0)
    conv = BinaryConv2d(64, 32, stride=2)
    x = torch.randn(2, 64, 6, 6)
    x[0, 0, 0, 0] = 0.0
    weight = conv.weight.detach().numpy()
    scale = np.abs(weight).mean(axis=(1, 2, 3))
    expected = reference(x.numpy(), np.where(weight >= 0, 1.0, -1.0), scale, np.zeros(32), 2, 1)
    np.testing.assert_allclose(conv(x).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    conv(x.requires_grad_()).sum().backward()
    assert conv.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="input channels in multiples of 32"):
        BinaryConv2d(48, 32)


@pytest.fixture(scope="module")
def supernet():
    """An untrained supernet with BatchNorm statistics and affine parameters far from the identity."""
    torch.manual_seed(0)
    net = BiRealNet((128, 128, 128))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(-1.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def space(supernet):
    return BinaryWidthSpace(supernet, torch.zeros(1, 1, 8, 8))


def test_a_candidate_is_the_supernets_first_channels(space, supernet, inputs):
    candidate = space.decode(np.array([1, 2, 0]))
    assert candidate.widths == {"stage1": 64, "stage2": 96, "stage3": 32}
    assert candidate.structure_key.endswith("/binary-w=64.96.32") and candidate.dropped == ()
    model = candidate.build()
    supernet.set_widths((64, 96, 32))
    try:
        torch.testing.assert_close(model(inputs), supernet(inputs))
    finally:
        supernet.set_widths(supernet.widths)
    assert model.widths == (64, 96, 32) and model.stages[1][0].conv.weight.shape == (96, 64, 3, 3)
    assert space.decode(np.array([1, 2, 0])).model_key == candidate.model_key \
        != space.decode(np.array([1, 2, 1])).model_key


def test_genomes_are_repaired_into_the_multipliers(space):
    assert space.n_var == 3 and space.lower.tolist() == [0, 0, 0] and space.upper.tolist() == [3, 3, 3]
    assert space.repair(np.array([-2, 7, 1.4])).tolist() == [0, 3, 1]
    assert space.widths(space.baseline()) == (128, 128, 128)
    assert [space.widths(s) for s in space.seeds()] == [(128,) * 3, (96,) * 3, (64,) * 3, (32,) * 3]
    sampled = {tuple(space.sample(np.random.default_rng(i))) for i in range(50)}
    assert all(0 <= g <= 3 for genome in sampled for g in genome) and len(sampled) > 10
    with pytest.raises(ValueError, match="shape"):
        space.repair(np.zeros(4))
    with pytest.raises(ValueError, match="multiple of 32"):
        BinaryWidthSpace(BiRealNet((96,) * 3), torch.zeros(1, 1, 8, 8), base_width=24)
    with pytest.raises(ValueError, match="128 wide in every stage"):
        BinaryWidthSpace(BiRealNet((64, 128, 128)), torch.zeros(1, 1, 8, 8))


def test_operations_count_binary_multiply_adds_at_one_64th(space):
    narrow, wide = (space.decode(np.array(g)).build() for g in ([0, 0, 0], [3, 3, 3]))
    stats = model_stats(wide, torch.zeros(1, 1, 8, 8))
    assert stats.params == sum(p.numel() for p in wide.parameters())
    binary_macs = 2 * 128 * 128 * 9 * 64 + (128 * 128 * 9 * 16) * 2 + (128 * 128 * 9 * 4) * 2
    float_macs = 128 * 9 * 64 + 128 * 10
    assert stats.flops == 2 * float_macs + round(2 * binary_macs / 64)
    assert model_stats(narrow, torch.zeros(1, 1, 8, 8)).flops < stats.flops


@pytest.fixture(scope="module")
def artifact(space):
    candidate = space.decode(np.array([1, 2, 0]))
    return export_onnx(candidate.build(), torch.zeros(1, 1, 8, 8), candidate.structure_key)


def test_the_export_holds_one_custom_node_per_binary_convolution(artifact):
    import onnx

    graph = onnx.load_from_string(artifact.onnx).graph
    nodes = [n for n in graph.node if n.domain == "ai.hilas"]
    assert [n.op_type for n in nodes] == ["BinaryConv2d"] * 6
    assert artifact.custom_ops == ("ai.hilas.BinaryConv2d",)
    assert not any(n.op_type in ("Sign", "Where", "Abs") for n in graph.node)  # weights and scales are constants


def test_runtimes_without_1_bit_kernels_refuse_before_timing_anything(artifact):
    for agent in (OnnxRuntimeCpuAgent(), CudaAgent()):
        with pytest.raises(MeasurementError) as e:
            agent.measure(artifact, QUICK)
        assert e.value.failure == "compile"
        assert f"{agent.kind} cannot run 1-bit kernels" in e.value.message
        assert "ai.hilas.BinaryConv2d" in e.value.message
        assert "tvm-cpu or ssh-tvm" in e.value.message


def test_the_network_compiled_by_tvm_computes_what_torch_does(space, artifact, inputs, tmp_path, monkeypatch):
    import tvm
    from tvm import relax

    from hilas.devices import tvm_build

    model = space.decode(np.array([1, 2, 0])).build()
    library = tvm_build.compile_library(artifact, HOST, None, tmp_path)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    for image in inputs:  # BatchNorm folded into the kernels' epilogues, the shortcuts and stem in float
        x = image[None].numpy()
        got = vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-4)
    key = tvm_build.library_key(artifact, HOST, None)
    monkeypatch.setattr(tvm_binary, "KERNEL", "another schedule")
    assert tvm_build.library_key(artifact, HOST, None) != key  # a changed kernel is compiled again


def test_the_importer_refuses_custom_ops_it_does_not_know(artifact, tmp_path):
    import onnx

    from hilas.devices import ModelArtifact, tvm_build

    model = onnx.load_from_string(artifact.onnx)
    next(n for n in model.graph.node if n.domain == "ai.hilas").op_type = "TernaryConv2d"
    unknown = ModelArtifact("unknown-op", model.SerializeToString(), artifact.inputs)
    with pytest.raises(MeasurementError, match="no TVM lowering for custom ops ai.hilas.TernaryConv2d"):
        tvm_build.compile_library(unknown, HOST, None, tmp_path)


def test_the_supernet_trains_by_the_sandwich_rule_and_is_cached(tmp_path, monkeypatch):
    from hilas.evaluators import supernet as trainer

    monkeypatch.setenv("HILAS_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((96, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 96)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    choices = WidthChoices((32, 64), 2)
    training = SupernetTraining(epochs=1, batch_size=32)
    seen: list[tuple[int, ...]] = []
    net = BiRealNet((64, 64))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    original = net.set_widths
    monkeypatch.setattr(net, "set_widths", lambda widths: (seen.append(tuple(widths)), original(widths)))
    trained, meta = cached_supernet(net, choices, teacher, x, y, training, name="test")
    assert seen[:2] == [(64, 64), (32, 32)] and len(seen) == 3 * 4 + 1  # 3 steps of 4 widths, then the largest
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())
    assert meta["training"]["epochs"] == 1 and meta["images"] == 96
    monkeypatch.setattr(trainer, "train_supernet", lambda *a, **k: pytest.fail("trained again"))
    again, _ = cached_supernet(BiRealNet((64, 64)), choices, teacher, x, y, training, name="test")
    for (k, v), w in zip(trained.state_dict().items(), again.state_dict().values()):
        assert torch.equal(v, w), k


@pytest.mark.slow
def test_tvm_cpu_measures_a_binary_candidate_pinned_to_one_core(artifact, tmp_path):
    import os

    agent = TvmCpuAgent(cache_dir=str(tmp_path / "tvm"))
    agent.prepare()
    session = agent._session
    try:
        runtime = agent.info()["runtime"]
        assert runtime["name"] == "tvm" and runtime["target"]["mcpu"] and runtime["num_threads"] == 1
        if len(os.sched_getaffinity(0)) > 1:
            core = max(os.sched_getaffinity(0))
            assert runtime["pinning"] == "pinned" and runtime["cores"] == [core]
            runner = agent._runner.stream.process.pid
            for thread in os.listdir(f"/proc/{runner}/task"):  # every thread of the runner, BLAS's included
                assert os.sched_getaffinity(int(thread)) == {core}
        latency = agent.measure(artifact, QUICK)
        assert latency.median_ms > 0 and latency.n >= 16 and "tvm" in latency.runtime
        assert len(list((tmp_path / "tvm").glob("*.so"))) == 1
    finally:
        agent.close()
    assert not session.exists()


@pytest.mark.slow
def test_a_tvm_cpu_runner_that_died_is_started_again(artifact, tmp_path):
    import os
    import signal

    agent = TvmCpuAgent(cache_dir=str(tmp_path / "tvm"))
    agent.prepare()
    try:
        agent.measure(artifact, QUICK)
        first = agent._runner.stream.process.pid
        os.kill(first, signal.SIGKILL)
        agent._runner.stream.process.wait(10)
        assert agent.measure(artifact, QUICK).median_ms > 0
        assert agent._runner.stream.process.pid != first
    finally:
        agent.close()


def test_tvm_cpu_options_are_checked():
    with pytest.raises(ValueError, match="num_threads"):
        TvmCpuAgent(num_threads=0)
    with pytest.raises(ValueError, match="cpu_affinity"):
        TvmCpuAgent(cpu_affinity=[])
    with pytest.raises(ValueError, match="mcpu 'no-such-cpu' is not a CPU LLVM knows.*leave mcpu out"):
        TvmCpuAgent(mcpu="no-such-cpu")


def test_inherit_copies_weights_and_not_references(supernet):
    narrow = inherit(supernet, (32, 32, 32))
    narrow.stem[0].weight.data.zero_()
    assert supernet.stem[0].weight.abs().sum() > 0


def test_the_config_takes_binary_alone():
    from hilas.search.config import parse_config
    from hilas.search.errors import UserError

    cfg = parse_config({"space": {"binary": True}}, "run.toml")
    assert cfg.binary and not cfg.masks and not cfg.drops
    with pytest.raises(UserError, match=r"\[space\] binary .* does not compose with masks or drops"):
        parse_config({"space": {"binary": True, "masks": True}}, "run.toml")
    assert not parse_config({}, "run.toml").binary


def test_integer_genes_mutate_within_their_bounds():
    from pymoo.core.problem import Problem

    from hilas.search.loop.nsga2 import RedrawMutation

    problem = Problem(n_var=3, xl=np.zeros(3), xu=np.full(3, 3), vtype=int)
    X = np.zeros((200, 3), dtype=np.int64)
    mutated = RedrawMutation(prob_var=0.5)._do(problem, X, random_state=np.random.default_rng(0))
    assert mutated.min() == 0 and mutated.max() == 3 and set(np.unique(mutated)) == {0, 1, 2, 3}


@pytest.mark.slow
def test_a_width_search_runs_through_ray_on_tvm_cpu(tmp_path, tmp_path_factory, monkeypatch):
    from hilas.search import RunConfig
    from hilas.search.runs import start_run
    from hilas.search.setup import binary
    from hilas.search.store import Store

    monkeypatch.setenv("HILAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))  # the session's model
    monkeypatch.setattr(binary, "TRAINING", SupernetTraining(epochs=1))  # the path, not the accuracy, is tested
    fast = {"warmup_runs": 2, "warmup_seconds": 0.01, "min_samples": 10, "min_seconds": 0.02,
            "cooldown_seconds": 0.0, "noise_threshold": 1.0}
    cfg = RunConfig(binary=True, masks=False, drops=False, budget=16, population=8, seed=1, devices=("tvm",),
                    device_definitions={"tvm": {"kind": "tvm-cpu"}}, measurement=fast)
    front = start_run(cfg, tmp_path / "run")["tvm"]
    store = Store.open(tmp_path / "run")
    try:
        assert store.status == "finished" and store.counts()["failures"] == 0
        assert store.devices()["tvm"]["info"]["runtime"]["binary_kernels"] == tvm_binary.KERNEL
        candidates = list(store.candidates())
        assert all("/binary-w=" in c.structure_key for c in candidates) and len(candidates) >= 12
    finally:
        store.close()
    assert front.baseline is not None and front.baseline.accuracy > 0.5
    assert front.points and all("tvm" in p.latency.runtime for p in front.points)


def test_the_demo_names_its_spaces():
    import subprocess
    import sys

    ran = subprocess.run([sys.executable, "-m", "hilas.search.cli", "demo", "--space", "ternary"], capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 2 and "--space must be one of pruning, binary, got 'ternary'" in ran.stderr
