"""Per-candidate overhead of the ssh-tvm kind: what a board measurement costs beyond its timed runs.

    python -m benchmarks.board_overhead [--candidates 8]

Builds (or reuses) the emulated aarch64 board of tests/board/emulated.py, starts its sshd on
127.0.0.1, and measures `--candidates` distinct structures through one SshTvmAgent, each compiled
from scratch (an empty compile cache). For every candidate it records where the time went: compile
(TVM on the host, cross-compiled), upload (SFTP), load (the TVM runtime on the board), protocol
(warm-up, timed rounds and cooldowns on the board) and the total the host saw. The overhead is
total - protocol; the target is at most 2 s per candidate after the first.

The board is emulated (qemu-user on this x86 host): its timings are not ARM timings, and its
loads and runs are slower than a real board's. Results go to benchmarks/results/board-overhead.*
and into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import datetime

import torch

from hilas import devices
from hilas.devices.host import cpu_model, host_state
from hilas.devices.ssh_tvm import SshTvmAgent
from hilas.evaluators.default import DigitsResNet

from .results_io import RESULTS, update_readme, write_atomically

TARGET_S = 2.0
WIDTHS = [(16, 32), (12, 32), (16, 24), (8, 32), (16, 16), (12, 24), (8, 16), (4, 8), (12, 16), (8, 24)]
# Short on purpose: the overhead does not depend on how long the timed runs last.
PROTOCOL = devices.MeasurementProtocol(warmup_runs=2, warmup_seconds=0.1, min_samples=10, min_seconds=0.2,
                                       max_seconds=5.0, rounds=3, cooldown_seconds=0.1, noise_threshold=1.0)
PARTS = ("compile", "upload", "load", "protocol", "total")


def artifacts(n: int) -> list[devices.ModelArtifact]:
    torch.manual_seed(0)
    return [devices.export_onnx(DigitsResNet(widths=w).eval(), torch.zeros(1, 1, 8, 8), f"digits-{w[0]}-{w[1]}")
            for w in WIDTHS[:n]]


def run(n: int) -> dict:
    from tests.board import emulated

    started = time.perf_counter()
    root = emulated.build()
    build_s = time.perf_counter() - started
    rows = []
    with emulated.running(root) as board, tempfile.TemporaryDirectory() as cache:
        agent = SshTvmAgent(host=board.host, port=board.port, user=board.user, key_file=str(board.key_file),
                            known_hosts=str(board.known_hosts), target=board.target,
                            cross_compiler=board.cross_compiler, python=board.python, workdir=board.workdir,
                            num_threads=1, cache_dir=cache)
        t = time.perf_counter()
        agent.prepare()
        prepare_s = time.perf_counter() - t
        try:
            for artifact in artifacts(n):
                latency = agent.measure(artifact, PROTOCOL)
                seconds = agent.last_seconds
                rows.append({"model": artifact.structure_key, "median_ms": latency.median_ms, "n": latency.n,
                             **{k: seconds[k] for k in PARTS}, "overhead": seconds["total"] - seconds["protocol"]})
                print(f"{artifact.structure_key}: overhead {rows[-1]['overhead']:.2f} s "
                      f"(compile {seconds['compile']:.2f}, upload {seconds['upload']:.2f}, load {seconds['load']:.2f})",
                      flush=True)
            info = agent.info()
        finally:
            agent.close()
    later = [r["overhead"] for r in rows[1:]]
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "host": {"cpu": cpu_model(), "os": platform.platform(), "python": platform.python_version(),
                 "load_average_after": host_state()["load_average"]},
        "board": {"device": info["device"], "runtime": info["runtime"], "emulated": True},
        "protocol": PROTOCOL.to_dict(),
        "board_build_s": build_s, "prepare_s": prepare_s,
        "candidates": rows,
        "overhead_after_first": {"median_s": statistics.median(later), "max_s": max(later)} if later else None,
        "target_s": TARGET_S,
    }


def render_markdown(result: dict) -> str:
    head = ("| model | median ms (emulated) | compile s | upload s | load s | protocol s | overhead s |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n")
    rows = "".join(f"| {r['model']} | {r['median_ms']:.3g} | {r['compile']:.2f} | {r['upload']:.3f} | "
                   f"{r['load']:.2f} | {r['protocol']:.2f} | {r['overhead']:.2f} |\n" for r in result["candidates"])
    after = result["overhead_after_first"]
    verdict = "meets" if after and after["max_s"] <= result["target_s"] else "misses"
    board = result["board"]["device"]
    load = result["host"]["load_average_after"]
    return (f"Measured {result['date']} on {result['host']['cpu']} ({result['host']['os']}, load average "
            f"{load[0] if load else '?'} at the end); board: qemu-user "
            f"{board.get('machine', '?')} emulation on that host, TVM "
            f"{result['board']['runtime'].get('tvm', '?')}, one TVM thread. Starting the board's runner (SSH, "
            f"upload, `import tvm` under emulation) took {result['prepare_s']:.1f} s once per search.\n\n"
            f"{head}{rows}\n"
            f"Overhead after the first candidate: median **{after['median_s']:.2f} s**, max **{after['max_s']:.2f} s**"
            f" ({verdict} the {result['target_s']:g} s target). Emulated timings are not ARM timings.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.board_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=8, choices=range(2, len(WIDTHS) + 1), metavar="N",
                        help=f"distinct structures to measure, 2 to {len(WIDTHS)} (default 8)")
    args = parser.parse_args(argv)
    result = run(args.candidates)
    markdown = render_markdown(result)
    print(markdown)
    write_atomically(RESULTS / "board-overhead.json", json.dumps(result, indent=2, default=str) + "\n")
    write_atomically(RESULTS / "board-overhead.md", f"# ssh-tvm per-candidate overhead (emulated board)\n\n{markdown}")
    update_readme("board-overhead", markdown)


if __name__ == "__main__":
    main()
