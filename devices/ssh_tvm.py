"""A board reached over SSH: the host compiles each structure with TVM, the board times it.

The host cross-compiles (devices.tvm_build), uploads the library with SFTP and asks the runner it
started on the board (devices.board_runner, kept alive for the whole search) to measure it. Faults
are handled at the smallest scope that fixes them: a runner that dies is restarted and the
measurement tried once more; a lost connection is re-opened with backoff; a board that stays
unreachable raises DeviceUnavailable, which the pool takes as "stop sending this device work".
"""

from __future__ import annotations

import io
import json
import socket
import time
import uuid
from collections import OrderedDict
from pathlib import Path, PurePosixPath

import paramiko

from . import board_runner
from .agent import DeviceUnavailable, MeasurementError
from .artifact import ModelArtifact
from .latency import Latency
from .protocol import MeasurementProtocol
from .runner_link import RunnerLink, RunnerLost, longest_measurement_s, measure_request, reply_latency
from .ssh import SshSettings, connect, remote_command, run
from .tvm_binary import KERNEL
from .tvm_build import PIPELINE, check_cross_compiler, check_target, compile_library, parse_target

LIBRARIES_KEPT = 8  # uploaded libraries kept on the board (the drift reference stays among them)


class SshTvmAgent:
    kind = "ssh-tvm"

    def __init__(
        self, *, host: str, target: dict | str, port: int = 22, user: str | None = None,
        key_file: str | None = None, known_hosts: str | None = None, password_env: str | None = None,
        cross_compiler: str | None = "aarch64-linux-gnu-g++", python: str = "python3", workdir: str = "hilas-board",
        num_threads: int | None = None, connect_timeout_s: float = 10.0, start_timeout_s: float = 120.0,
        command_timeout_s: float = 60.0, reconnect_attempts: int = 3, cache_dir: str | None = None,
    ) -> None:
        self.ssh = SshSettings(host, port, user, key_file, known_hosts, password_env, connect_timeout_s)
        self.ssh.validate()
        self.target = parse_target(target)
        check_target(self.target)
        for name, value in (("start_timeout_s", start_timeout_s), ("command_timeout_s", command_timeout_s)):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads must be a whole number >= 1, got {num_threads!r}")
        if not isinstance(reconnect_attempts, int) or reconnect_attempts < 1:
            raise ValueError(f"reconnect_attempts must be a whole number >= 1, got {reconnect_attempts!r}")
        self.cross_compiler = cross_compiler
        self.python = python
        self.workdir = workdir
        self.num_threads = num_threads
        self.start_timeout_s = start_timeout_s
        self.command_timeout_s = command_timeout_s
        self.reconnect_attempts = reconnect_attempts
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._client: paramiko.SSHClient | None = None
        self._runner: RunnerLink | None = None
        self._session = ""  # the remote directory this agent owns; removed by close()
        self._uploaded: OrderedDict[Path, str] = OrderedDict()  # local library -> remote path
        self._board: dict = {}
        self.last_seconds: dict[str, float] = {}  # where the last measurement's time went (see measure)

    # DeviceAgent -------------------------------------------------------------------------------
    def info(self) -> dict:
        board = self._board or {"device": {}, "runtime": {}, "state": {}}
        return {
            "kind": self.kind,
            "device": {**board["device"], "address": self.ssh.address},
            "runtime": {"name": "tvm", **board["runtime"], "target": self.target,
                        "cross_compiler": self.cross_compiler, "pipeline": PIPELINE, "binary_kernels": KERNEL,
                        "num_threads": self.num_threads or "default"},
            "state": board["state"],
        }

    def prepare(self) -> None:
        """Connect, check the board's Python and TVM, upload and start the runner."""
        check_cross_compiler(self.cross_compiler)
        self._connect_with_backoff()
        self._check_python()
        self._start_runner()

    def measure(self, artifact: ModelArtifact, protocol: MeasurementProtocol) -> Latency:
        """Compile (or take from the cache), upload, and have the board's runner measure one structure.

        `last_seconds` then says where the time went: compile, upload, load (on the board), protocol
        (warm-up, timed rounds and cooldowns on the board) and total, as the host saw it.
        """
        started = time.perf_counter()
        library = compile_library(artifact, self.target, self.cross_compiler, self.cache_dir)
        compiled = time.perf_counter()
        for attempt in (1, 2):
            try:
                self._ensure_runner()
                request = self._request(artifact, library, protocol)
                uploaded = time.perf_counter()
                reply = self._runner.call(request, longest_measurement_s(protocol, self.command_timeout_s))
                break
            except RunnerLost as e:
                self._drop_runner()
                if attempt == 2:
                    raise MeasurementError("runtime", f"the runner on {self.ssh.address} died twice while "
                                                      f"measuring {artifact.structure_key} ({e}); the model likely "
                                                      f"crashes the TVM runtime there") from None
            except TimeoutError as e:
                self._drop_runner()
                raise MeasurementError("timeout", f"{artifact.structure_key} on {self.ssh.address}: {e}") from None
        latency = reply_latency(reply)
        self.last_seconds = {"compile": compiled - started, "upload": uploaded - compiled,
                             **reply["seconds"], "total": time.perf_counter() - started}
        return latency

    def close(self) -> None:
        """Stop the runner and remove everything this agent uploaded."""
        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        if self._client is not None:
            if self._session:
                try:
                    run(self._client, remote_command("rm", "-rf", "--", self._session), self.command_timeout_s)
                except Exception:  # the board may be gone; nothing more to clean up from here
                    pass
            self._client.close()
            self._client = None
        self._uploaded.clear()

    # connection and runner ---------------------------------------------------------------------
    def _connect_with_backoff(self) -> None:
        """Open the connection, waiting 1, 2, 4 ... s between tries; DeviceUnavailable when none works."""
        error: DeviceUnavailable | None = None
        for attempt in range(self.reconnect_attempts):
            if attempt:
                time.sleep(2 ** (attempt - 1))
            try:
                self._client = connect(self.ssh)
                return
            except DeviceUnavailable as e:
                error = e
                if "host key" in str(e) or "refused user" in str(e):
                    break  # trying again cannot fix a key or a login
        tries = f" (tried {self.reconnect_attempts} times)" if self.reconnect_attempts > 1 else ""
        raise DeviceUnavailable(f"board {self.ssh.address}: {error}{tries}") from None

    def _check_python(self) -> None:
        status, out, err = self._run(self.python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])")
        if status == 127 or (status and "not found" in err):
            raise DeviceUnavailable(
                f"board {self.ssh.address} has no Python at {self.python!r}: install python3 (3.8 or newer) and "
                f"the TVM runtime (pip install apache-tvm=={_host_tvm()}), or set the device's python option"
            )
        version = out.split()
        if status or len(version) != 2 or (int(version[0]), int(version[1])) < (3, 8):
            raise DeviceUnavailable(f"board {self.ssh.address}: {self.python!r} is not Python 3.8 or newer "
                                    f"(it said {(out or err).strip()[:200]!r})")

    def _start_runner(self) -> None:
        """Upload the runner into a fresh session directory and start it; check its TVM matches ours."""
        try:
            hello = self._upload_and_start_runner()
        except (OSError, paramiko.SSHException, RunnerLost, TimeoutError) as e:
            self._drop_runner()
            raise DeviceUnavailable(f"board {self.ssh.address}: cannot start the runner: {e}") from None
        if not hello["ok"]:
            raise DeviceUnavailable(f"board {self.ssh.address}: {hello['message']}; install the TVM runtime "
                                    f"there: {self.python} -m pip install apache-tvm=={_host_tvm()}")
        board_tvm, host_tvm = hello["info"]["runtime"]["tvm"], _host_tvm()
        if board_tvm != host_tvm:
            raise DeviceUnavailable(
                f"board {self.ssh.address} runs TVM {board_tvm} but the host compiles with TVM {host_tvm}; "
                f"libraries only load in the same version: on the board run "
                f"{self.python} -m pip install apache-tvm=={host_tvm}"
            )
        self._board = hello["info"]

    def _upload_and_start_runner(self) -> dict:
        sftp = self._client.open_sftp()
        sftp.get_channel().settimeout(self.command_timeout_s)
        try:
            if not self._session:
                self._session = str(PurePosixPath(self.workdir) / f"session-{uuid.uuid4().hex[:12]}")
            package = PurePosixPath(self._session) / board_runner.BOARD_PACKAGE
            libraries = PurePosixPath(self._session) / "libraries"
            for directory in [*reversed(package.parents), package, libraries]:
                _mkdir(sftp, str(directory))
            sftp.putfo(io.BytesIO(b""), str(package / "__init__.py"))
            here = Path(board_runner.__file__).parent
            for name in board_runner.BOARD_MODULES:
                sftp.put(str(here / name), str(package / name))
        finally:
            sftp.close()
        self._uploaded.clear()
        env = {**board_runner.RUNTIME_ONLY_ENV, **({"TVM_NUM_THREADS": self.num_threads} if self.num_threads else {})}
        command = remote_command(self.python, "-u", "-m", f"{board_runner.BOARD_PACKAGE}.board_runner",
                                 cwd=self._session, stderr_to="runner.log", env=env, exec_=True)
        self._runner = RunnerLink(_ChannelStream(self._client, command, self._log_tail))
        return self._runner.read(self.start_timeout_s, what="start (import TVM)")

    def _ensure_runner(self) -> None:
        if self._runner is not None and self._runner.alive():
            return
        self._drop_runner()
        transport = self._client.get_transport() if self._client else None
        if transport is None or not transport.is_active():
            if self._client is not None:
                self._client.close()
            self._connect_with_backoff()
        self._start_runner()

    def _drop_runner(self) -> None:
        if self._runner is not None:
            self._runner.stop()
            self._runner = None

    def _request(self, artifact: ModelArtifact, library: Path, protocol: MeasurementProtocol) -> dict:
        return measure_request(artifact, self._upload(library), protocol,
                               f"tvm {_host_tvm()} on {self.ssh.host} ({json.dumps(self.target)})")

    def _upload(self, library: Path) -> str:
        """The library's path on the board, uploading it unless it is still there."""
        if library in self._uploaded:
            self._uploaded.move_to_end(library)
            return self._uploaded[library]
        remote = str(PurePosixPath(self._session) / "libraries" / library.name)
        try:
            sftp = self._client.open_sftp()
            sftp.get_channel().settimeout(self.command_timeout_s)
            try:
                sftp.put(str(library), remote)
                while len(self._uploaded) >= LIBRARIES_KEPT:
                    _, old = self._uploaded.popitem(last=False)
                    sftp.remove(old)
            finally:
                sftp.close()
        except (OSError, paramiko.SSHException) as e:
            raise RunnerLost(f"upload failed: {e}") from None
        self._uploaded[library] = remote
        return remote

    def _run(self, *argv: str) -> tuple[int, str, str]:
        try:
            return run(self._client, remote_command(*argv), self.command_timeout_s)
        except (OSError, paramiko.SSHException) as e:
            raise DeviceUnavailable(f"board {self.ssh.address}: {' '.join(argv[:2])} failed: {e}") from None

    def _log_tail(self) -> str:
        """The last lines the runner wrote to its log: why it died, when it did."""
        try:
            status, out, _ = run(self._client, remote_command("tail", "-n", "5", "runner.log", cwd=self._session),
                                 self.command_timeout_s)
        except Exception:
            return ""
        return " | ".join(line for line in out.splitlines() if line.strip())[-600:] if status == 0 else ""


class _ChannelStream:
    """The runner process on the board, seen through its SSH channel (a runner_link.Stream)."""

    def __init__(self, client: paramiko.SSHClient, command: str, log_tail) -> None:
        self._log_tail = log_tail
        try:
            self.channel = client.get_transport().open_session(timeout=10)
            self.channel.exec_command(command)
        except (OSError, paramiko.SSHException, AttributeError) as e:
            raise RunnerLost(f"cannot start the runner: {e}") from None

    def send(self, data: bytes) -> None:
        try:
            self.channel.sendall(data)
        except (OSError, paramiko.SSHException) as e:
            raise RunnerLost(f"cannot reach the runner: {e}") from None

    def receive(self, timeout_s: float) -> bytes | None:
        self.channel.settimeout(timeout_s)
        try:
            return self.channel.recv(65536)
        except socket.timeout:
            return None
        except (OSError, paramiko.SSHException) as e:
            raise RunnerLost(f"the connection dropped: {e}") from None

    def alive(self) -> bool:
        return not self.channel.closed and not self.channel.exit_status_ready()

    def exit_note(self) -> str:
        status = self.channel.recv_exit_status() if self.channel.exit_status_ready() else "unknown"
        log = self._log_tail()
        return f"status {status}" + (f"; its log: {log}" if log else "")

    def close(self) -> None:
        self.channel.close()


def _mkdir(sftp: paramiko.SFTPClient, path: str) -> None:
    if path in (".", "/"):
        return
    try:
        sftp.stat(path)
    except FileNotFoundError:
        sftp.mkdir(path)


def _host_tvm() -> str:
    import tvm

    return tvm.__version__
