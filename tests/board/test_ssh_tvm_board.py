"""The ssh-tvm kind against the emulated aarch64 board: measurements, cleanup, and every fault the
issue names, each a clear message within its timeout. Emulated timings are not ARM timings: these
tests check behaviour, never speed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from hilas.devices import DeviceUnavailable, MeasurementProtocol, export_onnx
from hilas.devices.ssh_tvm import SshTvmAgent
from hilas.evaluators.default import DigitsResNet

pytestmark = pytest.mark.board

QUICK = MeasurementProtocol(warmup_runs=2, warmup_seconds=0.0, min_samples=5, min_seconds=0.0, max_seconds=2.0,
                            rounds=2, cooldown_seconds=0.0, noise_threshold=1.0)


@pytest.fixture(scope="module")
def artifact():
    torch.manual_seed(0)
    return export_onnx(DigitsResNet(widths=(4, 8)).eval(), torch.zeros(1, 1, 8, 8), "digits-4-8")


def options(board, tmp_path: Path, **changes) -> dict:
    return {"host": board.host, "port": board.port, "user": board.user, "key_file": str(board.key_file),
            "known_hosts": str(board.known_hosts), "target": board.target, "cross_compiler": board.cross_compiler,
            "python": board.python, "workdir": board.workdir, "num_threads": 1, "reconnect_attempts": 2,
            "cache_dir": str(tmp_path / "tvm"), **changes}


def unavailable(board, tmp_path: Path, **changes) -> str:
    """The message prepare() fails with, connecting with `changes`."""
    agent = SshTvmAgent(**options(board, tmp_path, **changes))
    try:
        with pytest.raises(DeviceUnavailable) as e:
            agent.prepare()
    finally:
        agent.close()
    return str(e.value)


def runner_pids(session: str) -> list[int]:
    """Processes whose working directory is the agent's session directory: its runner."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == session:
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_measures_on_the_board_and_removes_what_it_uploaded(board, artifact, tmp_path):
    agent = SshTvmAgent(**options(board, tmp_path))
    agent.prepare()
    try:
        info = agent.info()
        assert info["device"]["machine"] == "aarch64" and info["runtime"]["target"] == board.target
        latency = agent.measure(artifact, QUICK)
        assert latency.n >= 10 and latency.median_ms > 0 and "tvm" in latency.runtime
        session = Path(agent._session)
        assert (session / "hilas_board" / "board_runner.py").exists() and list((session / "libraries").iterdir())
        assert agent.measure(artifact, QUICK).n >= 10  # measured again: compiled and uploaded once
        assert len(list((tmp_path / "tvm").glob("*.so"))) == 1 and len(list((session / "libraries").iterdir())) == 1
    finally:
        agent.close()
    assert not session.exists()


def test_a_runner_killed_mid_measurement_is_restarted_and_nothing_is_lost(board, artifact, tmp_path):
    agent = SshTvmAgent(**options(board, tmp_path))
    agent.prepare()
    try:
        agent.measure(artifact, QUICK)  # compiled and uploaded: the kill below lands in the measurement
        first = runner_pids(str(Path(agent._session).resolve()))
        assert first
        long = MeasurementProtocol(**{**QUICK.to_dict(), "min_seconds": 2.0, "min_samples": 1000, "max_seconds": 2.0})
        killer = threading.Timer(1.0, lambda: [os.kill(pid, 9) for pid in first])
        killer.start()
        latency = agent.measure(artifact, long)  # the runner dies under it, is restarted, measures again
        killer.join()
        assert latency.n > 0
        now = runner_pids(str(Path(agent._session).resolve()))
        assert now and not set(now) & set(first)
    finally:
        agent.close()


def test_sshd_stopped_mid_search_makes_the_board_unavailable_within_its_timeout(server, board, artifact, tmp_path):
    agent = SshTvmAgent(**options(board, tmp_path, connect_timeout_s=2.0))
    agent.prepare()
    try:
        agent.measure(artifact, QUICK)
        server.stop(kill_sessions=True)  # the board loses power: sshd, the connection and the runner go
        started = time.monotonic()
        with pytest.raises(DeviceUnavailable, match=rf"nothing accepts SSH connections at 127.0.0.1:{board.port}.*"
                                                    r"tried 2 times"):
            agent.measure(artifact, QUICK)
        assert time.monotonic() - started < 30
    finally:
        agent.close()
        server.start()


def test_an_unknown_host_key_is_refused_with_its_fingerprint_and_how_to_trust_it(board, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    message = unavailable(board, tmp_path, known_hosts=str(empty))
    listed = subprocess.run(["ssh-keygen", "-lf", "/dev/stdin"], input=board.known_hosts.read_text(),
                            capture_output=True, text=True, check=True).stdout.split()[1]
    assert f"({listed.split(':')[0]}" not in message  # the fingerprint, not just its algorithm
    assert listed in message and "unknown keys are refused" in message
    assert f"ssh-keyscan -p {board.port} 127.0.0.1 >> {empty}" in message


def test_wrong_user_and_wrong_key_are_refused_by_name(board, tmp_path):
    assert "refused user 'nobody-here'" in unavailable(board, tmp_path, user="nobody-here")
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True, timeout=30)
    message = unavailable(board, tmp_path, key_file=str(stranger))
    assert f"refused user '{board.user}' with key {stranger}" in message and "authorized_keys" in message


def test_nothing_listening_and_a_port_that_does_not_speak_ssh(board, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    message = unavailable(board, tmp_path, port=closed, reconnect_attempts=1)
    assert f"nothing accepts SSH connections at 127.0.0.1:{closed}" in message

    listener = socket.create_server(("127.0.0.1", 0))
    web = listener.getsockname()[1]

    def answer_like_a_web_server():
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        time.sleep(0.5)
        conn.close()

    thread = threading.Thread(target=answer_like_a_web_server, daemon=True)
    thread.start()
    try:
        message = unavailable(board, tmp_path, port=web, reconnect_attempts=1, connect_timeout_s=3.0)
    finally:
        listener.close()
    assert f"127.0.0.1:{web} accepted the connection but does not speak SSH (wrong port?)" in message


def test_a_board_without_python_says_what_to_install(board, tmp_path):
    message = unavailable(board, tmp_path, python="/opt/no-python-here/python3")
    assert "has no Python at '/opt/no-python-here/python3'" in message and "pip install apache-tvm==" in message


def test_a_board_with_another_tvm_version_says_which_to_install(board, tmp_path):
    import tvm

    fake = tmp_path / "fake-site"
    (fake / "tvm" / "runtime").mkdir(parents=True)
    (fake / "tvm" / "__init__.py").write_text("__version__ = '0.19.0'\n")
    (fake / "tvm" / "runtime" / "__init__.py").write_text("")
    (fake / "tvm" / "runtime" / "vm.py").write_text("")
    python = tmp_path / "python-with-old-tvm"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={fake} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    message = unavailable(board, tmp_path, python=str(python))
    assert f"runs TVM 0.19.0 but the host compiles with TVM {tvm.__version__}" in message
    assert f"pip install apache-tvm=={tvm.__version__}" in message
