"""The benchmark suite against what users would pick instead, in one command, timed step by step.

    python -m benchmarks.suite            # teachers (trained once, then found in the cache), front quality,
                                          # device utilisation, scaling
    python -m benchmarks.suite --quick    # the MNIST teacher and each command's --quick: a few minutes

Each step is the command a user would type, run in its own process, one after the other (they would
compete for the 2 cores otherwise). Each writes its own results and, for a full run, its section of
benchmarks/README.md; this command records how long each took and the total, so the one-hour budget
is a measured number. A step that fails stops the suite with its exit status.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from .machine import machine, measured_on, versions
from .results_io import RESULTS, update_readme, write_atomically

REPOSITORY = Path(__file__).resolve().parents[1]
TEACHER_STEPS = [["benchmarks.train_teacher", "mnist"], ["benchmarks.train_teacher", "cifar10"]]
MEASUREMENT_STEPS = [["benchmarks.front_quality"], ["benchmarks.utilisation"], ["benchmarks.scaling"]]
FULL = TEACHER_STEPS + MEASUREMENT_STEPS
QUICK = TEACHER_STEPS[:1] + [step + ["--quick"] for step in MEASUREMENT_STEPS]


def run(steps: list[list[str]], command: str) -> dict:
    """Run each `python -m` step in turn (output passed through), timing it; stop at the first failure."""
    started, before, timed = time.perf_counter(), machine(), []
    for step in steps:
        line = "python -m " + " ".join(step)
        print(f"\n=== {line}", flush=True)
        start = time.perf_counter()
        status = subprocess.run([sys.executable, "-m", *step], cwd=REPOSITORY).returncode
        if status:
            raise SystemExit(f"benchmarks.suite: `{line}` failed with exit status {status} after "
                             f"{time.perf_counter() - start:.0f} s; the steps before it wrote their results")
        timed.append({"step": line, "seconds": round(time.perf_counter() - start)})
    return {"command": command, "date": datetime.now().isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started),
            "machine": {**before, "load_average_after": machine()["load_average"]},
            "versions": versions(), "steps": timed}


def markdown(record: dict) -> str:
    rows = [f"| `{s['step']}` | {s['seconds']} |" for s in record["steps"]]
    return "\n".join([measured_on(record), "", "| step | seconds |", "|---|---:|", *rows,
                      f"| **all** | **{record['seconds']}** ({record['seconds'] / 60:.1f} min) |", "",
                      "A teacher already in the cache is found there in seconds; "
                      "its training time is in its `teacher.json` and in the front-quality table's heading.", ""])


def write_results(record: dict, results: Path, readme: bool) -> str:
    name = "suite-quick" if record["command"].endswith("--quick") else "suite"
    write_atomically(results / f"{name}.json", json.dumps(record, indent=1) + "\n")
    table = markdown(record)
    write_atomically(results / f"{name}.md", f"# Benchmark suite\n\n{table}")
    if readme:
        update_readme("suite", table)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each command's --quick (checks the wiring in a few "
                                                             "minutes; writes results but not the README)")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.suite" + (" --quick" if args.quick else "")
    record = run(QUICK if args.quick else FULL, command)
    print(write_results(record, RESULTS, readme=not args.quick))


if __name__ == "__main__":
    main()
