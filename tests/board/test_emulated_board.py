"""The emulated aarch64 board works as the `ssh-tvm` device kind will use it: key login with strict
host-key checking, an aarch64 python, and a library cross-compiled by the host's TVM that loads,
computes the right numbers and is timed on the board."""

from __future__ import annotations

import json
import shlex
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from tests.board.emulated import Board, BoardServer

pytestmark = pytest.mark.board

# Runs on the board. TVM_USE_RUNTIME_LIB=1 (set by the command) loads only the TVM runtime, as a
# deployed runner would: the compiler library costs seconds of import under emulation.
RUNNER = r"""
import json, sys
import numpy as np, tvm
from tvm.runtime.vm import VirtualMachine
lib_path, x_path, w_path, out_path = sys.argv[1:5]
dev = tvm.cpu()
vm = VirtualMachine(tvm.runtime.load_module(lib_path), dev)
args = [tvm.runtime.tensor(np.load(p), dev) for p in (x_path, w_path)]
np.save(out_path, vm["main"](*args).numpy())
timer = vm.time_evaluator("main", dev, number=3, repeat=2)
print(json.dumps({"results": list(timer(*args).results)}))
"""


def _connect(board: Board, known_hosts: Path | None = None):
    """A paramiko client as hilas will make one: the board's key, and RejectPolicy, so only a host
    key listed in known_hosts is accepted."""
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or board.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        board.host,
        port=board.port,
        username=board.user,
        key_filename=str(board.key_file),
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
    )
    return client


def _exec(client, command: str, timeout: float = 120) -> tuple[int, str, str]:
    """Runs a command on the board; `timeout` bounds every read, so a hung board fails the test."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


@pytest.fixture
def ssh(server: BoardServer):
    server.start()  # a no-op unless a test stopped it
    client = _connect(server.board)
    yield client
    client.close()


def test_key_login_and_known_host(ssh, board: Board, tmp_path: Path) -> None:
    import paramiko

    assert _exec(ssh, "echo ok") == (0, "ok\n", "")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        _connect(board, known_hosts=empty).close()


def test_board_python_is_aarch64(ssh, board: Board) -> None:
    code = "import platform; print(platform.machine())"
    assert _exec(ssh, f"{shlex.quote(board.python)} -c {shlex.quote(code)}") == (0, "aarch64\n", "")


def test_cross_compiled_module_runs_on_the_board(ssh, board: Board, tmp_path: Path) -> None:
    import tvm
    from tvm.script import ir as I
    from tvm.script import relax as R

    @I.ir_module
    class Module:
        @R.function
        def main(x: R.Tensor((4, 16), "float32"), w: R.Tensor((16, 8), "float32")) -> R.Tensor((4, 8), "float32"):
            with R.dataflow():
                y = R.nn.relu(R.matmul(x, w))
                R.output(y)
            return y

    lib = tmp_path / "model.so"
    tvm.compile(Module, tvm.target.Target(board.target)).export_library(str(lib), cc=board.cross_compiler)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16), dtype=np.float32)
    w = rng.standard_normal((16, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)

    remote = f"{board.workdir}/test_cross_compiled"
    _exec(ssh, f"mkdir -p {shlex.quote(remote)}")
    with ssh.open_sftp() as sftp:
        for name in ("model.so", "x.npy", "w.npy"):
            sftp.put(str(tmp_path / name), f"{remote}/{name}")
        with sftp.open(f"{remote}/runner.py", "w") as f:
            f.write(RUNNER)
        args = [f"{remote}/{name}" for name in ("runner.py", "model.so", "x.npy", "w.npy", "out.npy")]
        rc, out, err = _exec(ssh, f"TVM_USE_RUNTIME_LIB=1 {shlex.quote(board.python)} {shlex.join(args)}")
        assert rc == 0, err
        sftp.get(f"{remote}/out.npy", str(tmp_path / "out.npy"))

    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)
    results = json.loads(out.splitlines()[-1])["results"]
    assert len(results) == 2 and all(0 < r < 1 for r in results)


def test_sshd_stops_and_comes_back_on_the_same_port(server: BoardServer) -> None:
    board = server.board
    client = _connect(board)
    _, stdout, _ = client.exec_command("sleep 30", timeout=20)
    time.sleep(0.2)
    server.stop()  # kills the open session too, as a board losing power would
    assert stdout.channel.status_event.wait(10)  # the session died with sshd...
    assert stdout.channel.recv_exit_status() == -1  # ...so the channel closed with no exit status
    client.close()
    with pytest.raises(OSError):
        socket.create_connection((board.host, board.port), timeout=2).close()

    assert server.start() == board
    client = _connect(board)  # same port, same host key: known_hosts still matches
    assert _exec(client, "echo back") == (0, "back\n", "")
    client.close()
