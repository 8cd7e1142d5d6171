"""Binary candidates on the emulated aarch64 board: the bitserial kernels cross-compiled for its NEON
compute what torch computes, and ssh-tvm measures them. Emulated timings are not ARM timings."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch

from hilas.devices import MeasurementProtocol, export_onnx, tvm_build
from hilas.devices.board_runner import RUNTIME_ONLY_ENV
from hilas.devices.ssh_tvm import SshTvmAgent
from hilas.spaces.binary import BinaryWidthSpace, BiRealNet

pytestmark = pytest.mark.board

QUICK = MeasurementProtocol(warmup_runs=2, warmup_seconds=0.0, min_samples=5, min_seconds=0.0, max_seconds=2.0,
                            rounds=2, cooldown_seconds=0.0, noise_threshold=1.0)
# Run on the board's own Python and TVM runtime: load the library, run it on a seeded input, print the logits.
RUN_ON_BOARD = """
import json, sys
import numpy as np
import tvm, tvm.runtime.vm
x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype("float32")
vm = tvm.runtime.vm.VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())
print(json.dumps(vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy().tolist()))
"""


@pytest.fixture(scope="module")
def candidate():
    torch.manual_seed(0)
    supernet = BiRealNet((128, 128, 128))
    for m in supernet.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    model = BinaryWidthSpace(supernet.eval(), torch.zeros(1, 1, 8, 8)).decode(np.array([1, 2, 0])).build()
    return model, export_onnx(model, torch.zeros(1, 1, 8, 8), "binary-64-96-32")


def test_the_bitserial_kernels_compute_on_the_boards_cpu_what_torch_computes(board, candidate, tmp_path):
    model, artifact = candidate
    library = tvm_build.compile_library(artifact, board.target, board.cross_compiler, tmp_path)
    ran = subprocess.run([board.python, "-c", RUN_ON_BOARD, str(library)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **RUNTIME_ONLY_ENV})
    assert ran.returncode == 0, ran.stderr[-2000:]
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype("float32")
    expected = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np.array(json.loads(ran.stdout.splitlines()[-1])), expected, rtol=1e-4, atol=1e-4)


def test_ssh_tvm_measures_a_binary_candidate(board, candidate, tmp_path):
    _, artifact = candidate
    agent = SshTvmAgent(host=board.host, port=board.port, user=board.user, key_file=str(board.key_file),
                        known_hosts=str(board.known_hosts), target=board.target, cross_compiler=board.cross_compiler,
                        python=board.python, workdir=board.workdir, num_threads=1, cache_dir=str(tmp_path / "tvm"))
    agent.prepare()
    try:
        latency = agent.measure(artifact, QUICK)
        assert latency.median_ms > 0 and latency.n >= 10
        assert agent.info()["runtime"]["binary_kernels"].startswith("bitserial_conv2d_nchw")
    finally:
        agent.close()
