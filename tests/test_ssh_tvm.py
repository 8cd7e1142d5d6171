"""The ssh-tvm kind's parts that need no board: targets, the compile cache, quoting, and the runner itself.

The runner is run here as a local process on the host's own Python and TVM, speaking the same line
protocol it speaks over SSH; the tests against a board over SSH are in tests/board/.
"""

import json
import os
import shlex
import subprocess
import sys

import pytest
import torch

from hilas.devices import DeviceUnavailable, Latency, MeasurementProtocol, board_runner, export_onnx, tvm_build
from hilas.devices.ssh import remote_command
from hilas.devices.ssh_tvm import SshTvmAgent
from hilas.evaluators.default import DigitsResNet

HOST_TARGET = {"kind": "llvm"}
QUICK = MeasurementProtocol(warmup_runs=2, warmup_seconds=0.0, min_samples=8, min_seconds=0.0, max_seconds=1.0,
                            rounds=2, cooldown_seconds=0.0, noise_threshold=1.0)


@pytest.fixture(scope="module")
def artifact():
    torch.manual_seed(0)
    return export_onnx(DigitsResNet(widths=(4, 8)).eval(), torch.zeros(1, 1, 8, 8), "digits-4-8")


def test_the_old_target_string_form_is_refused_with_what_to_write():
    with pytest.raises(ValueError, match=r"old string form.*JSON dict.*\"mtriple\": \"aarch64-linux-gnu\""):
        tvm_build.parse_target("llvm -mtriple=aarch64-linux-gnu -mattr=+neon")
    assert tvm_build.parse_target('{"kind": "llvm", "mcpu": "cortex-a72"}') == {"kind": "llvm", "mcpu": "cortex-a72"}
    with pytest.raises(ValueError, match="not valid JSON"):
        tvm_build.parse_target('{"kind": "llvm",')
    with pytest.raises(ValueError, match='must be a dict with a "kind"'):
        tvm_build.parse_target({"mtriple": "aarch64-linux-gnu"})


def test_a_target_tvm_refuses_is_reported_when_the_device_is_defined():
    with pytest.raises(ValueError, match="TVM refuses target"):
        SshTvmAgent(host="127.0.0.1", target={"kind": "no-such-backend"})


def test_a_missing_cross_compiler_is_reported_before_connecting():
    agent = SshTvmAgent(host="192.0.2.1", target=HOST_TARGET, cross_compiler="no-such-linux-gnu-g++",
                        connect_timeout_s=0.1)
    with pytest.raises(DeviceUnavailable, match="cross compiler 'no-such-linux-gnu-g\\+\\+' is not on PATH.*apt-get"):
        agent.prepare()


def test_bad_options_are_refused_with_their_name():
    with pytest.raises(ValueError, match="port must be"):
        SshTvmAgent(host="board", port=70000, target=HOST_TARGET)
    with pytest.raises(ValueError, match="key_file .* does not exist"):
        SshTvmAgent(host="board", key_file="/no/such/key", target=HOST_TARGET)
    with pytest.raises(ValueError, match="num_threads"):
        SshTvmAgent(host="board", target=HOST_TARGET, num_threads=0)


def test_remote_commands_quote_every_argument():
    hostile = "x'; rm -rf ~; echo '"
    command = remote_command("python3", "-c", hostile, cwd="work dir/$HOME", stderr_to="log; reboot", exec_=True,
                             env={"TVM_NUM_THREADS": "1 && reboot"})
    words = shlex.split(command)
    assert words[:3] == ["cd", "work dir/$HOME", "&&"]
    assert hostile in words and "log; reboot" in " ".join(words) and words[3:5] == ["exec", "env"]
    assert "TVM_NUM_THREADS=1 && reboot" in words


def test_a_structure_is_compiled_once(artifact, tmp_path, monkeypatch):
    first = tvm_build.compile_library(artifact, HOST_TARGET, None, tmp_path)
    monkeypatch.setattr(tvm_build, "_build", lambda *a: pytest.fail("compiled again"))
    assert tvm_build.compile_library(artifact, HOST_TARGET, None, tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no partial files left beside it
    other_target = tvm_build.library_key(artifact, {"kind": "llvm", "mcpu": "cortex-a72"}, None)
    assert other_target != first.stem


def test_a_model_tvm_cannot_import_is_a_compile_error(tmp_path):
    from hilas.devices import MeasurementError, ModelArtifact, TensorSpec

    broken = ModelArtifact("broken", b"not an onnx model", (TensorSpec("input", (1, 1, 8, 8)),))
    with pytest.raises(MeasurementError) as e:
        tvm_build.compile_library(broken, HOST_TARGET, None, tmp_path)
    assert e.value.failure == "compile" and "broken" in e.value.message


class LocalRunner:
    """The board runner as a local process: the same program and protocol as on a board."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-u", "-m", "hilas.devices.board_runner"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True,
                                        env={**os.environ, **board_runner.RUNTIME_ONLY_ENV})

    def read(self) -> dict:
        return json.loads(self.process.stdout.readline())

    def call(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self.read()


@pytest.fixture
def runner():
    local = LocalRunner()
    yield local
    local.process.kill()
    local.process.wait(10)


def _request(library, protocol=QUICK) -> dict:
    return {"op": "measure", "library": str(library), "protocol": protocol.to_dict(), "runtime": "tvm test",
            "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}]}


def test_the_runner_measures_a_library_under_the_protocol(runner, artifact, tmp_path):
    hello = runner.read()
    assert hello["ok"] and hello["runner"] == 2
    import tvm

    assert hello["info"]["runtime"]["tvm"] == tvm.__version__ and hello["info"]["device"]["cores"] >= 1
    library = tvm_build.compile_library(artifact, HOST_TARGET, None, tmp_path)
    reply = runner.call(_request(library))
    assert reply["ok"], reply
    latency = Latency.from_dict(reply["latency"])
    assert len(latency.round_medians_ms) == 2 and latency.n >= 16 and latency.median_ms > 0
    assert latency.runtime == "tvm test" and all(len(r) >= 8 for r in latency.samples_ms)


def test_the_runner_answers_bad_requests_and_keeps_serving(runner, artifact, tmp_path):
    runner.read()
    missing = runner.call(_request(tmp_path / "missing.so"))
    assert not missing["ok"] and missing["failure"] == "runtime" and "could not load" in missing["message"]
    unknown = runner.call({"op": "format-disk"})
    assert not unknown["ok"] and "unknown op 'format-disk'" in unknown["message"]
    reply = runner.call(_request(tvm_build.compile_library(artifact, HOST_TARGET, None, tmp_path)))
    assert reply["ok"]
    assert runner.call({"op": "exit"}) == {"ok": True}
    assert runner.process.wait(10) == 0


def test_a_noisy_measurement_comes_back_as_a_noisy_error_with_evidence(runner, artifact, tmp_path):
    runner.read()
    impossible = MeasurementProtocol(**{**QUICK.to_dict(), "noise_threshold": 0.0, "max_remeasures": 0})
    reply = runner.call(_request(tvm_build.compile_library(artifact, HOST_TARGET, None, tmp_path), impossible))
    assert not reply["ok"] and reply["failure"] == "noisy" and Latency.from_dict(reply["latency"]).n > 0
