"""A user's path with a board, end to end through the `hilas` command: add the emulated board,
check it, search against it and the local CPU together, and get one front per device.
Emulated timings are not ARM timings: this checks the path, not the numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hilas.search.store import Store

pytestmark = [pytest.mark.board, pytest.mark.slow]


def hilas(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hilas.search.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_add_check_and_search_with_the_board_and_the_local_cpu(board, tmp_path, tmp_path_factory, device_registry):
    # the default model is trained once per session, where test_search_e2e trains it
    env = {**os.environ, "HILAS_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "cache")}
    target = json.dumps(board.target)
    added = hilas("devices", "add", "board", "--kind", "ssh-tvm", "-o", f"host={board.host}",
                  "-o", f"port={board.port}", "-o", f"user={board.user}", "-o", f"key_file={board.key_file}",
                  "-o", f"known_hosts={board.known_hosts}", "-o", f"target={target}",
                  "-o", f"python={board.python}", "-o", f"workdir={board.workdir}", "-o", "num_threads=1",
                  "-m", "min_seconds=0.05", env=env)
    assert added.returncode == 0, added.stderr

    checked = hilas("devices", "check", "board", "--quick", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "aarch64" in checked.stdout and "0.27" in checked.stdout and "reference median" in checked.stdout
    assert "healthy" in hilas("devices", "list", env=env).stdout

    config = tmp_path / "search.toml"
    config.write_text("""
[search]
budget = 16
population = 8
devices = ["local-cpu", "board"]
[measurement]
warmup_runs = 2
warmup_seconds = 0.01
min_samples = 10
min_seconds = 0.02
cooldown_seconds = 0.0
noise_threshold = 1.0
""")
    run = tmp_path / "run"
    searched = hilas("search", "run", str(config), "--out", str(run), env=env, timeout=900)
    assert searched.returncode == 0, searched.stdout[-2000:] + searched.stderr[-2000:]
    assert "Pareto front on local-cpu" in searched.stdout and "Pareto front on board" in searched.stdout

    shown = json.loads(hilas("front", "show", str(run), "--json", env=env).stdout)
    fronts = {f["device"]: f for f in shown}
    assert set(fronts) == {"local-cpu", "board"} and all(f["front"] for f in fronts.values())
    store = Store.open(run)
    try:
        assert store.counts()["failures"] == 0
        board_info = store.devices()["board"]["info"]
        assert board_info["device"]["machine"] == "aarch64" and board_info["runtime"]["name"] == "tvm"
        # the run keeps the board's definition: resuming does not depend on the registry any more
        assert store.config["device_definitions"]["board"]["kind"] == "ssh-tvm"
    finally:
        store.close()
    assert not list(Path(board.workdir).glob("session-*"))  # the board was cleaned up
