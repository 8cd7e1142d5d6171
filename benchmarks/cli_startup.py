"""How long the light commands take to start, beside `python -c pass`, and what they import.

    python -m benchmarks.cli_startup              # 15 interleaved rounds
    python -m benchmarks.cli_startup --rounds 5   # fewer

Each round runs every command once, in a fresh process, in turn (so the machine's slow drift reaches all
alike): `python -c pass`, `hilas --help`, `hilas devices list`, `hilas runs list` and `hilas front show`
on a small finished run (made first, with the `virtual` kind, in a temporary folder). The wall time of each
process is taken from outside it. A second pass, once per command, lists which of torch, Ray, onnx,
onnxruntime, pymoo and TVM the command imported. The target (issue #16): `hilas --help` under 1 s here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from .machine import machine, measured_on, versions
from .results_io import RESULTS, update_readme, write_atomically

HEAVY = ("torch", "ray", "onnx", "onnxruntime", "pymoo", "tvm")
TARGET_S = 1.0


def commands(run_dir: Path, registry: Path) -> dict[str, list[str]]:
    hilas = [sys.executable, "-m", "hilas.search.cli"]
    return {"python -c pass": [sys.executable, "-c", "pass"],
            "hilas --help": [*hilas, "--help"],
            "hilas devices list": [*hilas, "devices", "list", "--devices", str(registry)],
            "hilas runs list": [*hilas, "runs", "list", str(run_dir.parent)],
            "hilas front show RUN": [*hilas, "front", "show", str(run_dir)]}


def finished_run(root: Path) -> Path:
    """A small search on a simulated device: what `front show` reads."""
    from hilas.search import RunConfig
    from hilas.search.runs import start_run

    run_dir = root / "runs" / "small"
    fast = {"warmup_runs": 2, "warmup_seconds": 0.01, "min_samples": 10, "min_seconds": 0.02,
            "cooldown_seconds": 0.0}
    start_run(RunConfig(budget=8, population=4, devices=("sim",), device_definitions={"sim": {"kind": "virtual"}},
                        measurement=fast, drops=False), run_dir)
    return run_dir


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return seconds


def imported(command: list[str], env: dict[str, str]) -> list[str]:
    """Which heavy libraries the command's process imported (it is run again under a probe)."""
    if command[1] == "-c":
        return []
    probe = (f"import sys, atexit\natexit.register(lambda: print('HEAVY=' + ','.join(m for m in {HEAVY!r} "
             f"if m in sys.modules), file=sys.stderr))\nsys.argv = ['hilas', *{command[3:]!r}]\n"
             "from hilas.search.cli.main import main\nmain()")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    line = next((x for x in result.stderr.splitlines() if x.startswith("HEAVY=")), "HEAVY=?")
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


def run(rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="hilas-cli-startup-") as scratch:
        root = Path(scratch)
        env = {**os.environ, "HILAS_LATENCY_DB": str(root / "latency.sqlite"),
               "HILAS_DEVICES": str(root / "devices.toml")}
        os.environ.update({k: env[k] for k in ("HILAS_LATENCY_DB", "HILAS_DEVICES")})
        run_dir = finished_run(root)
        cmds = commands(run_dir, root / "devices.toml")
        for command in cmds.values():  # once each, untimed: file caches warm, as for a user's second call
            timed(command, env)
        seconds: dict[str, list[float]] = {name: [] for name in cmds}
        for _ in range(rounds):
            for name, command in cmds.items():
                seconds[name].append(timed(command, env))
        heavy = {name: imported(command, env) for name, command in cmds.items()}
    rows = []
    for name, values in seconds.items():
        q = statistics.quantiles(values, n=10) if len(values) > 1 else values * 9
        rows.append({"command": name, "median_s": statistics.median(values), "p10_s": q[0], "p90_s": q[-1],
                     "rounds": len(values), "imports": heavy[name]})
    return {"rows": rows, "rounds": rounds}


def markdown(record: dict) -> str:
    base = next(r for r in record["rows"] if r["command"] == "python -c pass")
    lines = [f"{measured_on(record)} {record['rounds']} interleaved rounds, each command a fresh process.", "",
             "| command | median s | p10-p90 s | beyond `python -c pass` s | heavy libraries imported |",
             "|---|---:|---:|---:|---|"]
    for r in record["rows"]:
        lines.append(f"| `{r['command']}` | {r['median_s']:.3f} | {r['p10_s']:.3f}-{r['p90_s']:.3f} | "
                     f"{r['median_s'] - base['median_s']:.3f} | {', '.join(r['imports']) or 'none'} |")
    help_row = next(r for r in record["rows"] if r["command"] == "hilas --help")
    verdict = "meets" if help_row["p90_s"] < TARGET_S else "**misses**"
    lines += ["", f"`hilas --help` {verdict} the {TARGET_S:g} s target (p90 {help_row['p90_s']:.3f} s)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cli_startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON and markdown")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    started, before = time.perf_counter(), machine()
    result = run(args.rounds)
    record = {"command": "python -m benchmarks.cli_startup" + (f" --rounds {args.rounds}" if args.rounds != 15 else ""),
              "date": datetime.now().isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - started),
              "machine": {**before, "load_average_after": machine()["load_average"]}, "versions": versions(),
              **result}
    write_atomically(args.results / "cli-startup.json", json.dumps(record, indent=1) + "\n")
    table = markdown(record)
    write_atomically(args.results / "cli-startup.md", f"# Command-line start-up\n\n{table}")
    if args.results == RESULTS:
        update_readme("cli-startup", table)
    print(table)


if __name__ == "__main__":
    main()
