"""SSH connections to boards, with host keys checked and every failure explained.

An unknown host key is refused (never trusted on first use): the error shows the key's
fingerprint and the command that trusts it. Passwords and key passphrases are never options;
they come from the ssh-agent, an unencrypted key, or an environment variable the user names.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

import paramiko

from .agent import DeviceUnavailable


@dataclass(frozen=True)
class SshSettings:
    """Where a board is and how to log in to it."""

    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None  # None: the user's ~/.ssh/known_hosts
    password_env: str | None = None  # name of an environment variable holding a password or key passphrase
    connect_timeout_s: float = 10.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def known_hosts_path(self) -> Path:
        return Path(self.known_hosts).expanduser() if self.known_hosts else Path("~/.ssh/known_hosts").expanduser()

    def validate(self) -> None:
        if not self.host or not isinstance(self.host, str):
            raise ValueError(f"host must be a host name or address, got {self.host!r}")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"port must be a whole number from 1 to 65535, got {self.port!r}")
        if self.key_file is not None and not Path(self.key_file).expanduser().is_file():
            raise ValueError(f"key_file {self.key_file!r} does not exist; give the private key the board accepts, "
                             f"or leave key_file out to use the ssh-agent")
        if self.connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {self.connect_timeout_s!r}")


class _RefuseUnknownKey(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, with a message that says how to trust the key on purpose."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings

    def missing_host_key(self, client, hostname, key) -> None:
        s = self.settings
        raise DeviceUnavailable(
            f"the host key of {hostname} ({key.get_name()} {key_fingerprint(key)}) is not in "
            f"{s.known_hosts_path}; unknown keys are refused. If this is your board, check that fingerprint "
            f"on the board (ssh-keygen -lf /etc/ssh/ssh_host_{_key_file_kind(key)}_key.pub) and trust it with: "
            f"ssh-keyscan -p {s.port} {s.host} >> {s.known_hosts_path}"
        )


def key_fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it (SHA256:base64)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _key_file_kind(key: paramiko.PKey) -> str:
    name = key.get_name()
    return {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}.get(name, "ecdsa" if "ecdsa" in name else "*")


def connect(settings: SshSettings) -> paramiko.SSHClient:
    """A logged-in client, or DeviceUnavailable saying what failed and what to do."""
    s = settings
    client = paramiko.SSHClient()
    known = s.known_hosts_path
    try:
        if known.exists():
            client.load_host_keys(str(known))
    except (OSError, paramiko.SSHException) as e:
        raise DeviceUnavailable(f"cannot read known_hosts file {known}: {e}") from None
    client.set_missing_host_key_policy(_RefuseUnknownKey(s))
    secret = _secret(s)
    try:
        client.connect(
            s.host, port=s.port, username=s.user or getpass.getuser(),
            key_filename=str(Path(s.key_file).expanduser()) if s.key_file else None,
            password=secret, passphrase=secret,
            allow_agent=s.key_file is None, look_for_keys=s.key_file is None,
            timeout=s.connect_timeout_s, banner_timeout=s.connect_timeout_s, auth_timeout=s.connect_timeout_s,
            channel_timeout=s.connect_timeout_s,
        )
    except DeviceUnavailable:
        client.close()
        raise
    except Exception as e:
        client.close()
        raise DeviceUnavailable(_explain(e, s)) from None
    return client


def _secret(s: SshSettings) -> str | None:
    if not s.password_env:
        return None
    value = os.environ.get(s.password_env)
    if value is None:
        raise DeviceUnavailable(f"password_env names ${s.password_env}, which is not set; export it, or use a key "
                                f"or the ssh-agent instead")
    return value


def _explain(error: Exception, s: SshSettings) -> str:
    """One line for each way a connection fails, saying what to check."""
    user = s.user or getpass.getuser()
    if isinstance(error, paramiko.BadHostKeyException):
        return (f"the host key of {s.address} has CHANGED since it was recorded in {s.known_hosts_path} "
                f"(now {key_fingerprint(error.key)}): the board was reinstalled, or someone is in between. "
                f"If you trust the new key, remove the old one with ssh-keygen -R '[{s.host}]:{s.port}' "
                f"-f {s.known_hosts_path} and add the new one with ssh-keyscan")
    if isinstance(error, paramiko.AuthenticationException):
        how = f"key {s.key_file}" if s.key_file else "the ssh-agent's keys or ~/.ssh keys"
        return (f"{s.address} refused user {user!r} with {how}: check the user option, and that the public key "
                f"is in ~{user}/.ssh/authorized_keys on the board")
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError) or isinstance(error, ConnectionRefusedError):
        return f"nothing accepts SSH connections at {s.address}: is the board on, is sshd running, is the port right?"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve host {s.host!r}: check the host option"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return f"no answer from {s.address} within {s.connect_timeout_s:g} s: is the board on this network?"
    if isinstance(error, paramiko.PasswordRequiredException):
        return (f"key {s.key_file} is encrypted: load it into the ssh-agent, or name an environment variable "
                f"holding its passphrase with the password_env option")
    if isinstance(error, paramiko.SSHException) and "banner" in str(error).lower():
        return f"{s.address} accepted the connection but does not speak SSH (wrong port?): {error}"
    return f"cannot connect to {s.address}: {type(error).__name__}: {error}"


def remote_command(*argv: str, cwd: str | None = None, stderr_to: str | None = None, env: dict | None = None,
                   exec_: bool = False) -> str:
    """A command line for the board's shell with every argument quoted; nothing on the host runs a shell."""
    if env:  # through env(1): assignments before `exec` are not passed on by every shell
        argv = ("env", *(f"{k}={v}" for k, v in env.items()), *argv)
    words = " ".join(shlex.quote(a) for a in argv)
    if exec_:
        words = "exec " + words
    if stderr_to:
        words += f" 2>>{shlex.quote(stderr_to)}"
    return f"cd {shlex.quote(cwd)} && {words}" if cwd else words


def run(client: paramiko.SSHClient, command: str, timeout_s: float) -> tuple[int, str, str]:
    """Run a short command; (exit status, stdout, stderr). Raises TimeoutError when it overruns."""
    channel = client.get_transport().open_session(timeout=timeout_s)
    channel.settimeout(timeout_s)
    try:
        channel.exec_command(command)
        stdout = _read_all(channel.makefile("rb"))
        stderr = _read_all(channel.makefile_stderr("rb"))
        status = channel.recv_exit_status()
    except socket.timeout:
        raise TimeoutError(f"the board did not finish {command!r} within {timeout_s:g} s") from None
    finally:
        channel.close()
    return status, stdout, stderr


def _read_all(stream) -> str:
    return stream.read().decode("utf-8", errors="replace")
