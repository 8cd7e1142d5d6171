"""An emulated aarch64 board on this machine, for testing hilas's `ssh-tvm` device kind.

Why: the `ssh-tvm` kind cross-compiles a model with Apache TVM on the host, uploads the shared
library over SFTP and times it on the board with the TVM runtime. Tests and CI have no board, so
this module makes an honest stand-in on the loopback interface:

* the board's Python is Debian's own arm64 `python3.11`, unpacked into a sysroot and run under
  `qemu-aarch64` user-mode emulation (CPU model cortex-a72, the target TVM compiles for), with the
  aarch64 wheels of TVM, tvm-ffi, numpy and ml_dtypes at the host's versions, so a library built
  by the host is loaded and timed by real aarch64 code;
* a private `sshd` on 127.0.0.1 and a free port, with its own host key, a key pair for the tests
  and a known_hosts file, so the host side connects exactly as it would to a board: key
  authentication and strict host-key checking (paramiko's RejectPolicy).

Everything is built once into a cache folder ROOT (default `~/.cache/hilas/board`, or
`$HILAS_BOARD_DIR`) and reused. Each step is skipped when its result is already there, and the
sysroot is assembled in a temporary folder and renamed, so an interrupted build leaves nothing
that a later build would trust. Layout:

    ROOT/downloads/      the .debs and wheels (kept, so a rebuild needs no network)
    ROOT/boards/KEY/     one board per set of versions (KEY hashes them): sysroot/ and bin/python3.
                         Two virtual environments with different TVMs share ROOT without rebuilding
                         each other's board under a running test; delete unused ones by hand.
    ROOT/ssh/            the board's host key, the tests' key pair, authorized_keys
    ROOT/run/PORT/       one running sshd's config, pid, log and known_hosts
    ROOT/work/PORT/      that server's remote work folder, removed by BoardServer.close()

Limits, so no one reads more into it than there is: times measured on it are emulation times,
not a Cortex-A72's (good for testing the protocol, not for judging a model); qemu -L falls back
to the host's files for paths the sysroot lacks; and the board's python cannot start another
aarch64 process by `sys.executable` (no binfmt_misc), so a runner must do its work in-process.
`import tvm` loads the 240 MB compiler library too (about 6 s of CPU under qemu); a runner that
sets TVM_USE_RUNTIME_LIB=1 and uses tvm.runtime.vm.VirtualMachine needs only the runtime (2 s).

Humans: `python -m tests.board.emulated build` builds it; `python -m tests.board.emulated run`
starts sshd and prints how to connect, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import getpass
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The board's software. Debian 12 (bookworm) ships python3.11, so the wheels are for CPython 3.11.
BOARD_PYTHON = "3.11"
# Debian's arm64 python and the libraries that `import tvm`, numpy, ctypes (tvm-ffi loads its
# libraries with it), hashlib, bz2, lzma and uuid need; curses, readline, dbm, nis and sqlite3
# are left out (the board runs scripts, not an interactive shell).
BOARD_DEBS = (
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
    "python3.11",
    "libc6",
    "libexpat1",
    "zlib1g",
    "libffi8",
    "libstdc++6",
    "libgcc-s1",
    "libssl3",
    "libbz2-1.0",
    "liblzma5",
    "libuuid1",
)
# Used when the host lacks a distribution; otherwise the board gets the host's exact version,
# because the host's TVM writes the libraries that the board's TVM must load.
DEFAULT_WHEELS = {
    "apache-tvm": "0.27.0.post1",
    "apache-tvm-ffi": "0.1.15.post2",
    "numpy": "2.4.6",
    "ml_dtypes": "0.6.0",
    "typing_extensions": "4.16.0",
}
# Wheels that bookworm's glibc 2.36 can load. pip takes --platform tags literally (no expansion to
# older glibc), so every one is named.
WHEEL_PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)))
QEMU_CPU = "cortex-a72"
TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": QEMU_CPU, "mattr": ["+neon"]}
CROSS_COMPILER = "aarch64-linux-gnu-g++"

# Host tools and the Debian package that brings each.
HOST_TOOLS = {
    "qemu-aarch64": "qemu-user",
    CROSS_COMPILER: "g++-aarch64-linux-gnu",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
}
LOOPBACK = "127.0.0.1"
SITE_PACKAGES = "usr/lib/python3/dist-packages"
FORMAT = 1  # bump when the layout of the sysroot changes, so old ones are rebuilt

# Bounds on every wait, in seconds.
APT_TIMEOUT = 600.0
PIP_TIMEOUT = 600.0
TOOL_TIMEOUT = 120.0
SMOKE_TIMEOUT = 300.0
LOCK_TIMEOUT = 1800.0
SSHD_START_TIMEOUT = 15.0
SSHD_STOP_TIMEOUT = 10.0


log = logging.getLogger("hilas.board")


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """Logs each slow build step and its duration, so a slow fresh build shows where time went."""
    start = time.monotonic()
    log.info("%s ...", what)
    yield
    log.info("%s: %.1f s", what, time.monotonic() - start)


class BoardUnavailable(RuntimeError):
    """This machine cannot build or run the emulated board; the message says why and what to do."""


@dataclass(frozen=True)
class Board:
    """A running emulated board: what an ssh client needs to reach it and what to compile for it."""

    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    python: str  # the remote python command: the wrapper's absolute path
    workdir: str  # a remote folder hilas may write to
    target: dict = field(default_factory=lambda: json.loads(json.dumps(TARGET)))  # TVM target JSON
    cross_compiler: str = CROSS_COMPILER


# ----------------------------------------------------------------------------------------------
# small helpers


def default_root() -> Path:
    """The cache folder: `$HILAS_BOARD_DIR`, else `~/.cache/hilas/board`."""
    env = os.environ.get("HILAS_BOARD_DIR")
    return Path(env).expanduser().resolve() if env else Path.home() / ".cache" / "hilas" / "board"


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(
    args: Sequence[str],
    what: str,
    timeout: float,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    ok: Sequence[int] = (0,),
) -> subprocess.CompletedProcess[str]:
    """Runs a command without a shell, bounded by `timeout`; a failure names the step and the tail
    of its output, because a build log is the only thing a CI reader will see."""
    try:
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except FileNotFoundError as e:
        raise BoardUnavailable(f"{what}: {args[0]} not found ({e})") from e
    except subprocess.TimeoutExpired as e:
        raise BoardUnavailable(f"{what}: `{shlex.join(args)}` ran past {timeout:.0f} s") from e
    if proc.returncode not in ok:
        raise BoardUnavailable(
            f"{what}: `{shlex.join(args)}` exited {proc.returncode}:\n"
            f"{_tail(proc.stderr or proc.stdout)}"
        )
    return proc


def _is_root() -> bool:
    return os.geteuid() == 0


def _which(tool: str) -> str | None:
    """Like shutil.which, also looking in the sbin folders a non-root PATH often lacks (sshd)."""
    path = os.environ.get("PATH", os.defpath) + os.pathsep + "/usr/sbin:/sbin"
    return shutil.which(tool, path=path)


def _write_if_changed(path: Path, text: str, mode: int = 0o644) -> None:
    """Writes atomically (temp file + rename), so a crash never leaves half a file."""
    if path.exists() and path.read_text() == text:
        path.chmod(mode)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(root: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """One build at a time per cache folder (parallel pytest workers, a human in another shell)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BoardUnavailable(
                        f"another build of {root} held its lock for {timeout:.0f} s; "
                        f"if none is running, delete {root / '.build.lock'}"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fresh_dir(parent: Path, name: str) -> Path:
    """A new empty temporary folder beside the final one (same filesystem, so rename is atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    tmp.chmod(0o755)
    return tmp


def _replace_dir(tmp: Path, final: Path) -> None:
    """Moves a finished folder into place, removing what was there before."""
    if final.exists():
        old = final.with_name(f".{final.name}.old.{os.getpid()}")
        final.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    tmp.rename(final)


def _clean_stale_temps(root: Path, board: Path) -> None:
    """Removes temporary folders left by a build that was killed (callers hold the build lock)."""
    for parent in (root / "downloads", board):
        for p in parent.glob(".*.*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# host: platform, tools, apt


def _check_platform() -> None:
    """qemu-user, Debian's multiarch and /proc are what this relies on."""
    if platform.system() != "Linux":
        raise BoardUnavailable(f"the emulated board needs Linux, not {platform.system()}")
    if platform.machine() not in ("x86_64", "aarch64"):
        raise BoardUnavailable(
            f"the emulated board is built on x86_64 or aarch64 hosts, not {platform.machine()}"
        )
    if _which("apt-get") is None or _which("dpkg") is None:
        raise BoardUnavailable("the emulated board is built from Debian packages: apt-get and dpkg are needed")


def _apt_env() -> dict[str, str]:
    return {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def _apt_opts() -> list[str]:
    # Wait (bounded) for another apt instead of failing at once; as root, let apt write downloads
    # into our folders without dropping to the _apt user (which cannot write there).
    opts = ["-o", "DPkg::Lock::Timeout=120", "-o", "Acquire::Retries=2"]
    if _is_root():
        opts += ["-o", "APT::Sandbox::User=root"]
    return opts


def _apt_update() -> None:
    if not _is_root():
        raise BoardUnavailable("apt-get update needs root; run `sudo apt-get update` and build again")
    _run(["apt-get", *_apt_opts(), "update"], "apt-get update", APT_TIMEOUT, env=_apt_env())


def _ensure_host_tools() -> None:
    """Installs qemu-user, the aarch64 cross compiler and openssh-server when missing (root only)."""
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if _which(tool) is None})
    if not missing:
        return
    if not _is_root():
        raise BoardUnavailable(
            f"missing Debian packages {' '.join(missing)} and not root to install them: "
            f"run `sudo apt-get install {' '.join(missing)}`"
        )
    with _step(f"apt-get install {' '.join(missing)}"):
        _apt_update()
        _run(
            ["apt-get", *_apt_opts(), "install", "-y", "--no-install-recommends", *missing],
            f"installing {' '.join(missing)}",
            APT_TIMEOUT,
            env=_apt_env(),
        )
    still = sorted(tool for tool in HOST_TOOLS if _which(tool) is None)
    if still:
        raise BoardUnavailable(f"after apt-get install, still not found: {' '.join(still)}")


def _ensure_arm64_arch() -> None:
    """`apt-get download pkg:arm64` needs arm64 as a dpkg foreign architecture and its lists."""
    if platform.machine() == "aarch64":
        return
    foreign = _run(["dpkg", "--print-foreign-architectures"], "dpkg", TOOL_TIMEOUT).stdout.split()
    if "arm64" in foreign:
        return
    if not _is_root():
        raise BoardUnavailable(
            "arm64 is not a dpkg architecture here and not root to add it: run "
            "`sudo dpkg --add-architecture arm64 && sudo apt-get update`"
        )
    _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64", TOOL_TIMEOUT)
    _apt_update()


# ----------------------------------------------------------------------------------------------
# downloads (cached)


def _download_debs(cache: Path) -> list[Path]:
    """The arm64 .debs of BOARD_DEBS, downloaded once into cache/debs."""
    final = cache / "debs"
    manifest = {"packages": list(BOARD_DEBS)}
    have = _read_json(final / "manifest.json")
    if isinstance(have, dict) and have.get("packages") == manifest["packages"]:
        return [final / name for name in have["files"]]
    _ensure_arm64_arch()
    tmp = _fresh_dir(cache, "debs")
    try:
        args = ["apt-get", *_apt_opts(), "download", *(f"{p}:arm64" for p in BOARD_DEBS)]
        try:
            _run(args, "downloading the board's arm64 .debs", APT_TIMEOUT, cwd=tmp, env=_apt_env())
        except BoardUnavailable:
            # Stale package lists (a version that the mirror no longer has): refresh once.
            if not _is_root():
                raise
            _apt_update()
            _run(args, "downloading the board's arm64 .debs", APT_TIMEOUT, cwd=tmp, env=_apt_env())
        files = sorted(p.name for p in tmp.glob("*.deb"))
        if len(files) != len(BOARD_DEBS):
            raise BoardUnavailable(f"apt-get download gave {len(files)} .debs for {len(BOARD_DEBS)} packages: {files}")
        (tmp / "manifest.json").write_text(json.dumps({**manifest, "files": files}, indent=1))
        _replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [final / name for name in files]


def wheel_versions() -> dict[str, str]:
    """The host's version of each board wheel (DEFAULT_WHEELS where the host lacks it): a library
    exported by the host's TVM must be loaded by the same TVM and tvm-ffi on the board."""
    versions = {}
    for name, default in DEFAULT_WHEELS.items():
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = default
    return versions


def _download_wheels(cache: Path, versions: dict[str, str]) -> list[Path]:
    """The aarch64 CPython-3.11 wheels, downloaded once per set of versions into cache/wheels."""
    final = cache / f"wheels-{_key(versions)}"
    have = _read_json(final / "manifest.json")
    if isinstance(have, dict) and have.get("versions") == versions:
        return [final / name for name in have["files"]]
    tmp = _fresh_dir(cache, "wheels")
    try:
        args = [
            sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
            "--only-binary=:all:", "--no-deps", *(f"--platform={tag}" for tag in WHEEL_PLATFORMS),
            "--python-version", BOARD_PYTHON, "--implementation", "cp", "--dest", str(tmp),
            *(f"{name}=={version}" for name, version in versions.items()),
        ]  # fmt: skip
        _run(args, "downloading the board's aarch64 wheels with pip", PIP_TIMEOUT)
        files = sorted(p.name for p in tmp.glob("*.whl"))
        if len(files) != len(versions):
            raise BoardUnavailable(f"pip download gave {len(files)} wheels for {len(versions)} packages: {files}")
        (tmp / "manifest.json").write_text(json.dumps({"versions": versions, "files": files}, indent=1))
        _replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [final / name for name in files]


# ----------------------------------------------------------------------------------------------
# the board's files


def _wanted(versions: dict[str, str]) -> dict:
    """What a board is made of; a board dir whose marker differs is not trusted."""
    return {"format": FORMAT, "packages": list(BOARD_DEBS), "versions": versions}


def _key(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def board_dir(root: Path, versions: dict[str, str] | None = None) -> Path:
    """ROOT/boards/KEY: the board for these versions (default: the host's, see wheel_versions)."""
    return root / "boards" / _key(_wanted(versions or wheel_versions()))


def _sysroot(board: Path) -> Path:
    return board / "sysroot"


def _marker(board: Path) -> Path:
    return _sysroot(board) / ".hilas-board.json"


def _python_wrapper(board: Path) -> Path:
    return board / "bin" / "python3"


def _assemble_sysroot(board: Path, debs: list[Path], wheels: list[Path]) -> Path:
    """Unpacks the .debs (dpkg -x: no maintainer scripts, no root needed) and the wheels into a
    temporary folder, then renames it to board/sysroot (no marker yet: the smoke test writes it)."""
    tmp = _fresh_dir(board, "sysroot")
    try:
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(tmp)], f"unpacking {deb.name}", TOOL_TIMEOUT)
        site = tmp / SITE_PACKAGES
        site.mkdir(parents=True, exist_ok=True)
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(site)
        interpreter = tmp / "usr" / "bin" / f"python{BOARD_PYTHON}"
        if not interpreter.is_file():
            raise BoardUnavailable(f"the .debs gave no {interpreter.relative_to(tmp)}")
        _replace_dir(tmp, _sysroot(board))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _sysroot(board)


def _precompile(sysroot: Path) -> None:
    """Byte-compiles the stdlib and the wheels with the host's CPython 3.11 (same .pyc format):
    dpkg -x runs no py3compile, and compiling them under emulation costs every first import."""
    dirs = [str(sysroot / "usr" / "lib" / f"python{BOARD_PYTHON}"), str(sysroot / SITE_PACKAGES)]
    if sys.version_info[:2] != tuple(int(x) for x in BOARD_PYTHON.split(".")):
        return  # a different .pyc format; the board compiles on first use instead
    # Test suites are skipped (never imported on the board); exit status 1 means some file did not
    # compile (the stdlib's deliberately broken test data), which is fine.
    _run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-x", r"/(tests?|idlelib|lib2to3|tkinter)/", *dirs],
         "byte-compiling the sysroot", PIP_TIMEOUT, ok=(0, 1))  # fmt: skip


def _write_wrapper(board: Path) -> Path:
    """BOARD/bin/python3: the board's python as one command, so ssh runs `BOARD/bin/python3 ...`
    as it would run `python3 ...` on a board."""
    qemu = _which("qemu-aarch64")
    assert qemu is not None, "checked by _ensure_host_tools"
    sysroot = _sysroot(board)
    interpreter = sysroot / "usr" / "bin" / f"python{BOARD_PYTHON}"
    text = (
        "#!/bin/sh\n"
        "# The emulated aarch64 board's python: Debian's arm64 python under qemu user-mode\n"
        "# emulation. Written by tests/board/emulated.py; do not edit.\n"
        "unset PYTHONHOME PYTHONPATH PYTHONSTARTUP PYTHONUSERBASE\n"
        f"exec {shlex.quote(qemu)} -cpu {QEMU_CPU} -L {shlex.quote(str(sysroot))} "
        f"{shlex.quote(str(interpreter))} \"$@\"\n"
    )
    wrapper = _python_wrapper(board)
    _write_if_changed(wrapper, text, mode=0o755)
    return wrapper


def _smoke_test(board: Path, versions: dict[str, str]) -> None:
    """Checks that the board's python is aarch64 and imports the whole TVM (compiler included, as
    `pip install apache-tvm` on a board gives), so a broken sysroot fails the build, not a test."""
    code = (
        "import json, platform, numpy, tvm, tvm_ffi, tvm.relax; "
        "print(json.dumps([platform.machine(), tvm.__version__, tvm_ffi.__version__, numpy.__version__]))"
    )
    env = {"PATH": os.environ.get("PATH", os.defpath), "PYTHONDONTWRITEBYTECODE": "1"}
    out = _run([str(_python_wrapper(board)), "-c", code], "the board's smoke test (import tvm under qemu)",
               SMOKE_TIMEOUT, env=env).stdout  # fmt: skip
    machine, tvm_version, ffi_version, numpy_version = json.loads(out.strip().splitlines()[-1])
    expected = ["aarch64", versions["apache-tvm"], versions["apache-tvm-ffi"], versions["numpy"]]
    if [machine, tvm_version, ffi_version, numpy_version] != expected:
        raise BoardUnavailable(
            f"the board's python reports {[machine, tvm_version, ffi_version, numpy_version]}, expected {expected}"
        )


def _ensure_keys(root: Path) -> None:
    """The board's host key and the tests' user key pair, generated once."""
    ssh = root / "ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    ssh.chmod(0o700)
    for name, comment in (("host_ed25519_key", "hilas-board-host"), ("id_ed25519", "hilas-board-user")):
        key = ssh / name
        if key.exists() and key.with_suffix(".pub").exists():
            continue
        key.unlink(missing_ok=True)
        key.with_suffix(".pub").unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
             f"ssh-keygen {name}", TOOL_TIMEOUT)  # fmt: skip
    _write_if_changed(ssh / "authorized_keys", (ssh / "id_ed25519.pub").read_text(), mode=0o600)


def build(root: Path | None = None) -> Path:
    """Builds the board's files into `root` (default: default_root()), or reuses them, and returns
    root. Raises BoardUnavailable when this machine cannot: not Linux on x86_64/aarch64, not
    Debian, packages missing and not root to install them, apt or pip failing."""
    root = (root or default_root()).resolve()
    _check_platform()
    with _locked(root):
        _ensure_host_tools()
        versions = wheel_versions()
        wanted = _wanted(versions)
        board = board_dir(root, versions)
        have = _read_json(_marker(board))
        if not (isinstance(have, dict) and all(have.get(k) == v for k, v in wanted.items())):
            _clean_stale_temps(root, board)
            with _step("arm64 .debs (apt-get download)"):
                debs = _download_debs(root / "downloads")
            with _step("aarch64 wheels (pip download)"):
                wheels = _download_wheels(root / "downloads", versions)
            with _step("sysroot (dpkg -x, unzip, compileall)"):
                _assemble_sysroot(board, debs, wheels)
                _precompile(_sysroot(board))
            _write_wrapper(board)
            with _step("smoke test (import tvm under qemu)"):
                _smoke_test(board, versions)
            files = {"debs": [p.name for p in debs], "wheels": [p.name for p in wheels]}
            _write_if_changed(_marker(board), json.dumps({**wanted, **files}, indent=1))
        _write_wrapper(board)
        _ensure_keys(root)
    return root


# ----------------------------------------------------------------------------------------------
# sshd


def _die_with_parent() -> None:
    """Runs in the sshd child before exec: SIGTERM it when the thread that started it ends, so a
    test run that is killed leaves no sshd listening behind it."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    return children


def _descendants(pid: int) -> list[int]:
    """Every process below pid: sshd's per-connection children and the commands they run (these
    call setsid, so killing sshd's process group would miss them)."""
    children, found, todo = _children_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class BoardServer:
    """The board's sshd, owned by this process: start() and stop() may be called again and again,
    and the port stays the same, so a test can stop the board mid-search and bring it back.
    sshd is told to exit when the thread that started it ends: start it from a thread that
    outlives its use (the main thread in tests)."""

    def __init__(self, root: Path, port: int | None = None, host: str = LOOPBACK) -> None:
        self.root = root.resolve()
        self.host = host
        self.port = port or _free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None
        self._board_dir = board_dir(self.root)
        if not _marker(self._board_dir).is_file():
            raise BoardUnavailable(f"no board for this host's TVM in {self.root}: call build() first")
        # Per port, so servers of concurrent test runs sharing root never overwrite each other.
        self._run_dir = self.root / "run" / str(self.port)
        self._work_dir = self.root / "work" / str(self.port)
        self._ssh_dir = self.root / "ssh"
        self._home = self._run_dir / "home"

    @property
    def board(self) -> Board:
        return Board(
            host=self.host,
            port=self.port,
            user=getpass.getuser(),
            key_file=self._ssh_dir / "id_ed25519",
            known_hosts=self._run_dir / "known_hosts",
            python=str(_python_wrapper(self._board_dir)),
            workdir=str(self._work_dir),
        )

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _config(self) -> Path:
        """An sshd_config that touches nothing outside root: own host key, own authorized_keys,
        own pid file, loopback only, keys only."""
        ssh = self._ssh_dir
        if any(c.isspace() for c in str(self.root)):
            raise BoardUnavailable(
                f"sshd_config cannot name paths with spaces ({self.root}): set HILAS_BOARD_DIR to a path without"
            )
        lines = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            "AddressFamily inet",
            f"HostKey {ssh / 'host_ed25519_key'}",
            f"PidFile {self._run_dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {ssh / 'authorized_keys'}",
            f"AllowUsers {getpass.getuser()}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",  # the cache folder's owner and modes are not sshd's business
            "UsePAM no",
            "UseDNS no",
            "PrintMotd no",
            "Subsystem sftp internal-sftp",
            "LogLevel INFO",
            # The board's logins get a HOME of their own, as on a real board, so the shell never reads this
            # machine's ~/.bashrc: its setup (pyenv's init waits up to 60 s for a lock that a session killed
            # by a test leaves behind) is not the board's.
            f"SetEnv HOME={self._home}",
        ]
        path = self._run_dir / "sshd_config"
        _write_if_changed(path, "\n".join(lines) + "\n", mode=0o600)
        return path

    def _write_known_hosts(self) -> None:
        key_type, key = (self._ssh_dir / "host_ed25519_key.pub").read_text().split()[:2]
        _write_if_changed(self._run_dir / "known_hosts", f"[{self.host}]:{self.port} {key_type} {key}\n")

    def _log_tail(self) -> str:
        try:
            return _tail((self._run_dir / "sshd.log").read_text(errors="replace"))
        except OSError:
            return "(no log)"

    def _wait_ready(self, timeout: float) -> None:
        """Until sshd answers with its banner on the port (bounded), or has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BoardUnavailable(
                    f"sshd exited {self._proc.returncode} at start on {self.host}:{self.port}:\n{self._log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                    s.settimeout(2.0)
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise BoardUnavailable(f"sshd did not answer on {self.host}:{self.port} within {timeout:.0f} s:\n"
                               f"{self._log_tail()}")

    def start(self, timeout: float = SSHD_START_TIMEOUT) -> Board:
        """Starts sshd in the foreground of a child process (-D -e: this object owns and reaps it)
        and returns once it accepts connections."""
        if self.is_running:
            return self.board
        sshd = _which("sshd")
        if sshd is None:
            raise BoardUnavailable("sshd not found: build() installs openssh-server")
        privsep = Path("/run/sshd")  # sshd refuses to start without its privilege separation folder
        if _is_root():
            privsep.mkdir(mode=0o755, exist_ok=True)
        elif not privsep.is_dir():
            raise BoardUnavailable(f"sshd needs {privsep}: run `sudo mkdir -p {privsep}`")
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._work_dir.mkdir(parents=True, exist_ok=True)
        self._home.mkdir(parents=True, exist_ok=True)
        config = self._config()
        self._write_known_hosts()
        _run([sshd, "-t", "-f", str(config)], "checking the board's sshd_config", TOOL_TIMEOUT)
        with open(self._run_dir / "sshd.log", "ab") as log:
            self._proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config)],  # sshd re-executes itself: absolute path
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not sshd directly
                preexec_fn=_die_with_parent,
            )
        self._wait_ready(timeout)
        return self.board

    def stop(self, kill_sessions: bool = True, timeout: float = SSHD_STOP_TIMEOUT) -> None:
        """Stops sshd and reaps it. With kill_sessions (the default) the open connections and the
        commands they run die too, as when a board loses power; without, they run on, as after
        `systemctl stop ssh`."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        sessions = _descendants(proc.pid) if kill_sessions else []
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        (self._run_dir / "sshd.pid").unlink(missing_ok=True)

    def close(self) -> None:
        """Stops sshd and removes this server's run and work folders."""
        self.stop()
        shutil.rmtree(self._run_dir, ignore_errors=True)
        shutil.rmtree(self._work_dir, ignore_errors=True)

    def __enter__(self) -> Board:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def running(root: Path | None = None, port: int | None = None) -> Iterator[Board]:
    """Builds (or reuses) the board, starts its sshd on a free loopback port, yields the Board,
    then stops sshd and its sessions and removes the server's work folder. For a server to stop
    and restart mid-test, use BoardServer."""
    server = BoardServer(build(root), port=port)
    with server as board:
        yield board


# ----------------------------------------------------------------------------------------------
# command line


def _print_details(board: Board) -> None:
    ssh = shlex.join([
        "ssh", "-i", str(board.key_file), "-p", str(board.port),
        "-o", f"UserKnownHostsFile={board.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        f"{board.user}@{board.host}",
    ])  # fmt: skip
    print(f"host            {board.host}")
    print(f"port            {board.port}")
    print(f"user            {board.user}")
    print(f"key_file        {board.key_file}")
    print(f"known_hosts     {board.known_hosts}")
    print(f"python          {board.python}")
    print(f"workdir         {board.workdir}")
    print(f"target          {json.dumps(board.target)}")
    print(f"cross_compiler  {board.cross_compiler}")
    print(f"try: {ssh} {board.python} -c 'import platform, tvm; print(platform.machine(), tvm.__version__)'")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.board.emulated", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "run"],
                        help="build the board's files, or build and run sshd until Ctrl-C")
    parser.add_argument("--root", type=Path, default=None,
                        help="cache folder (default $HILAS_BOARD_DIR or ~/.cache/hilas/board)")
    parser.add_argument("--port", type=int, default=None, help="sshd port for `run` (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        start = time.monotonic()
        root = build(args.root)
        print(f"board built in {root} ({time.monotonic() - start:.1f} s)")
        if args.command == "run":
            signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops sshd too
            with running(root, port=args.port) as board:
                _print_details(board)
                print("sshd is running; Ctrl-C stops it")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
    except BoardUnavailable as e:
        print(f"board unavailable: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
