"""Front quality against what users would pick instead, on real data, with one recovery recipe for all.

    python -m benchmarks.front_quality            # MNIST and CIFAR-10 (trains the teachers on first use)
    python -m benchmarks.front_quality --quick    # MNIST only, tiny budgets: checks the wiring in minutes

For each dataset (the teachers and their data: `benchmarks/train_teacher.py`), on `local-cpu`:

- **hilas**: NSGA-II over filter masks and block drops, steered by measured latency;
- **random**: the same space and budget, the space's own random samples (`[search] algorithm = "random"`);
- **uniform L1**: Torch-Pruning's magnitude pruner (L1 norm) at one ratio for every layer, 0.1 ... 0.8,
  what most users do today, measured by the same agent;
- **FLOPs**: NSGA-II steered by FLOPs instead of latency (`[search] objective = "flops"`); its front (in
  FLOPs) is then looked up in the latencies the run measured.

The fronts of hilas, random and uniform L1 are recovered by the same recipe (`search.recover.recovered`:
distillation from the teacher on the few-shot images only; at most `members` members per front, spread
along it) and scored on the validation split. Hypervolume is taken in (error, latency / teacher latency)
up to (1.0, 1.0): the reference point is error 1.0 at the teacher's median latency on the device.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import tempfile
import time
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

from devices import export_onnx
from evaluators import top1
from search import RunConfig, load_config, start_run
from search.fronts import area_dominated, non_dominated, run_fronts
from search.proxy import feature_layers, proxy_accuracy
from search.recover import recover_front, recovered, recovery_steps
from search.runs import resolve_devices, started_pool
from search.store import Store
from search.task import SearchTask, load_task

from .machine import machine, measured_on, versions
from .results_io import RESULTS, update_readme, write_atomically
from .train_teacher import TEACHERS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEVICE = "local-cpu"
SEED = 0
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
LATENCY_FRACTIONS = (0.5, 0.7)
POINTS_BELOW_TEACHER = (0.5, 1.0, 2.0, 5.0)  # accuracy targets of the FLOPs comparison
POLL_TIMEOUT_S = 600.0
TIE = 0.02  # latencies within 2 % of each other count as even in the FLOPs comparison's verdict


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much each method may do on one dataset."""

    evaluations: int
    population: int
    recovery_epochs: int
    members: int  # front members recovered per method
    ratios: tuple[float, ...] = RATIOS


FULL = {"mnist": Budget(64, 16, 30, 6), "cifar10": Budget(48, 16, 5, 6)}
QUICK = {"mnist": Budget(16, 8, 1, 3, (0.3, 0.6))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.front_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="MNIST only, tiny budgets (checks the wiring)")
    parser.add_argument("--data", type=Path, default=DATA, help="the benchmark data folder (default ../shared/data)")
    parser.add_argument("--runs", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON and markdown")
    parser.add_argument("--render", action="store_true", help="measure nothing: write the tables again from the "
                                                              "last run's JSON")
    args = parser.parse_args(argv)
    if args.render:
        record = json.loads((args.results / "front-quality.json").read_text())
        publish(record, args.results, "front-quality", readme=args.results == RESULTS)
        return
    budgets = QUICK if args.quick else FULL
    started, before = time.perf_counter(), machine()
    with tempfile.TemporaryDirectory(prefix="hilas-front-quality-") as scratch:
        runs = args.runs or Path(scratch)
        os.environ["HILAS_LATENCY_DB"] = str(runs / "latency.sqlite")  # nothing borrowed from earlier runs
        results = {name: compare(name, budget, args.data, runs / name) for name, budget in budgets.items()}
    command = "python -m benchmarks.front_quality" + (" --quick" if args.quick else "")
    record = {"command": command, "date": datetime.now().isoformat(timespec="seconds"),
              "seconds": round(time.perf_counter() - started),
              "machine": {**before, "load_average_after": machine()["load_average"]},
              "versions": {**versions(), **{p: version(p) for p in ("torch-pruning", "pymoo")}},
              "seed": SEED, "device": DEVICE, "datasets": results}
    name = "front-quality-quick" if args.quick else "front-quality"
    write_atomically(args.results / f"{name}.json", json.dumps(record, indent=1) + "\n")
    publish(record, args.results, name, readme=not args.quick and args.results == RESULTS)


def publish(record: dict, results: Path, name: str, readme: bool) -> None:
    """The record's tables as markdown, beside its JSON and (for a full run) in benchmarks/README.md."""
    table = markdown(record)
    write_atomically(results / f"{name}.md", f"# Front quality\n\n{table}")
    if readme:
        update_readme("front-quality", table)
    print(table)


def compare(dataset: str, budget: Budget, data_dir: Path, runs: Path) -> dict:
    """Every method on one dataset: the fronts after recovery, their hypervolumes, and the FLOPs comparison."""
    teacher_dir = TEACHERS[dataset](data_dir, progress=lambda e, n: print(f"{dataset} teacher: epoch {e}/{n}",
                                                                        flush=True))
    cfg = dataclasses.replace(load_config(teacher_dir / "hilas.toml"), budget=budget.evaluations,
                              population=budget.population, seed=SEED, fresh=True, devices=(DEVICE,))
    task = load_task(cfg)
    methods = {"hilas": searched(cfg, runs / "hilas", budget),
               "random": searched(dataclasses.replace(cfg, algorithm="random"), runs / "random", budget)}
    teacher_ms = methods["hilas"]["teacher_median_ms"]
    methods["uniform-l1"] = uniform_l1(cfg, task, budget)
    flops_run = searched(dataclasses.replace(cfg, objective="flops"), runs / "flops", budget, recover=False)
    for result in methods.values():
        pairs = [(p["top1_recovered"], p["median_ms"]) for p in result["recovered"]]
        result["hypervolume"] = area_dominated(pairs, teacher_ms)
        result["top1_at"] = {str(f): best_within(pairs, f * teacher_ms) for f in LATENCY_FRACTIONS}
    return {"teacher": json.loads((teacher_dir / "teacher.json").read_text()), "teacher_median_ms": teacher_ms,
            "teacher_top1": task.reference_accuracy, "shots_per_class": cfg.shots,
            "validation_images": len(task.validation_y), "budget": dataclasses.asdict(budget), "methods": methods,
            "flops_vs_latency": flops_vs_latency(runs / "hilas", runs / "flops", task.reference_accuracy),
            "flops_run": {k: flops_run[k] for k in ("evaluations", "search_seconds")}}


def searched(cfg: RunConfig, run_dir: Path, budget: Budget, recover: bool = True) -> dict:
    """A search (and the recovery of its front), timed."""
    start = time.perf_counter()
    start_run(cfg, run_dir)
    search_s = time.perf_counter() - start
    store = Store.open(run_dir)
    try:
        front = run_fronts(run_dir, store)[DEVICE]
        evaluations = sum(1 for _ in store.candidates())
    finally:
        store.close()
    result = {"evaluations": evaluations, "search_seconds": search_s,
              "teacher_median_ms": front.baseline.latency.median_ms if front.baseline else None,
              "proxy_front": [{"candidate": p.candidate, "top1_proxy": p.accuracy,
                               "median_ms": p.latency.median_ms} for p in front.points]}
    if recover:
        start = time.perf_counter()
        after = recover_front(run_dir, device=DEVICE, epochs=budget.recovery_epochs, members=budget.members)[DEVICE]
        result["recovery_seconds"] = time.perf_counter() - start
        proxy = {p.key: p.accuracy for p in front.evaluated}
        result["recovered"] = [{"candidate": p.candidate, "top1_proxy": proxy[p.key], "top1_recovered": p.accuracy,
                                "median_ms": p.latency.median_ms} for p in after.evaluated]
    return result


def uniform_l1(cfg: RunConfig, task: SearchTask, budget: Budget) -> dict:
    """Torch-Pruning's L1 magnitude pruner at each ratio, every layer alike; each model measured on the
    device, scored by the search's proxy and recovered by the same recipe."""
    start = time.perf_counter()
    models = {ratio: pruned_uniformly(task.model, task.example_input, ratio) for ratio in budget.ratios}
    latencies = measured(cfg, {f"uniform-l1-{ratio}": model for ratio, model in models.items()}, task)
    search_s = time.perf_counter() - start
    start = time.perf_counter()
    layers = feature_layers(task.model, task.example_input)
    steps = recovery_steps(task, budget.recovery_epochs)
    rows = []
    for ratio, model in models.items():
        proxy = proxy_accuracy(copy.deepcopy(model), task, cfg, [])
        after = top1(recovered(model, task, layers, steps), task.validation_x, task.validation_y)
        rows.append({"ratio": ratio, "top1_proxy": proxy, "top1_recovered": after,
                     "median_ms": latencies[f"uniform-l1-{ratio}"]})
    return {"evaluations": len(models), "search_seconds": search_s, "recovery_seconds": time.perf_counter() - start,
            "recovered": rows}


def pruned_uniformly(model: nn.Module, example_input: torch.Tensor, ratio: float) -> nn.Module:
    """A copy of `model` with `ratio` of every layer's channels removed by L1 norm (the classifier's outputs kept)."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    classifier = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1:]
    tp.pruner.MagnitudePruner(pruned, example_input, importance=tp.importance.MagnitudeImportance(p=1),
                              pruning_ratio=ratio, ignored_layers=classifier).step()
    return pruned


def measured(cfg: RunConfig, models: dict[str, nn.Module], task: SearchTask) -> dict[str, float]:
    """Median latency of each model on the device, through the same pool and protocol as a search."""
    medians: dict[str, float] = {}
    with started_pool(cfg, resolve_devices(cfg)) as (pool, _):
        for name, model in models.items():
            pool.submit(DEVICE, export_onnx(model, task.example_input, name))
        deadline = time.monotonic() + POLL_TIMEOUT_S
        while len(medians) < len(models):
            if time.monotonic() > deadline:
                raise SystemExit(f"{DEVICE} measured {len(medians)} of {len(models)} models in {POLL_TIMEOUT_S:.0f} s")
            for r in pool.poll(timeout=1.0):
                if r.error is not None:
                    raise SystemExit(f"{DEVICE} could not measure {r.arch_key}: {r.error}")
                medians[r.arch_key] = r.latency.median_ms
    return medians


def flops_vs_latency(latency_run: Path, flops_run: Path, teacher_top1: float) -> list[dict]:
    """For accuracy targets below the teacher's: the fastest measured model on each search's own front (the
    latency search's front in latency; the FLOPs search's front in FLOPs, then looked up in measured latency).
    Proxy accuracies: neither front is recovered."""
    fronts = {}
    for name, run in (("latency", latency_run), ("flops", flops_run)):
        store = Store.open(run)
        try:
            points = run_fronts(run, store)[DEVICE].evaluated
        finally:
            store.close()
        fronts[name] = non_dominated(points, cost=lambda p: p.flops) if name == "flops" else non_dominated(points)
    rows = []
    for points_below in POINTS_BELOW_TEACHER:
        target = teacher_top1 - points_below / 100
        fastest = {name: min((p.latency.median_ms for p in front if p.accuracy >= target), default=None)
                   for name, front in fronts.items()}
        rows.append({"points_below_teacher": points_below, "target_top1": target,
                     "latency_search_ms": fastest["latency"], "flops_search_ms": fastest["flops"]})
    return rows


def best_within(pairs: list[tuple[float, float]], limit_ms: float | None) -> float | None:
    """The best accuracy among models no slower than `limit_ms`."""
    return max((acc for acc, ms in pairs if limit_ms is not None and ms <= limit_ms), default=None)


def markdown(record: dict) -> str:
    v = record["versions"]
    lines = [f"{measured_on(record)} Torch-Pruning {v['torch-pruning']}, pymoo {v['pymoo']}; device "
             f"`{record['device']}`; seed {record['seed']}.", ""]
    for name, d in record["datasets"].items():
        b = d["budget"]
        t = d["teacher"]
        lines += [f"**{name}**: teacher top-1 {100 * d['teacher_top1']:.2f} % on {d['validation_images']} validation "
                  f"images, median {d['teacher_median_ms']:.4f} ms (trained for {t['epochs']} epochs on "
                  f"{t['train_images']} images in {t['train_seconds']:.0f} s by `python -m benchmarks.train_teacher "
                  f"{name}`, before this command); {d['shots_per_class']} shots per class; "
                  f"recovery: {b['recovery_epochs']} epoch(s) of distillation on the shots, at most {b['members']} "
                  f"members per front.", "",
                  "| method | evaluations | search s | recovery s | hypervolume | top-1 at 0.5x latency | "
                  "top-1 at 0.7x latency |", "|---|---:|---:|---:|---:|---:|---:|"]
        best = max(r["hypervolume"] for r in d["methods"].values())
        for method, r in d["methods"].items():
            hv = f"{r['hypervolume']:.3f}"
            lines.append(f"| {method} | {r['evaluations']} | {r['search_seconds']:.0f} | {r['recovery_seconds']:.0f} | "
                         f"{'**' + hv + '**' if r['hypervolume'] == best else hv} | {percent(r['top1_at']['0.5'])} | "
                         f"{percent(r['top1_at']['0.7'])} |")
        lines += ["", verdict(d["methods"])]
        lines += ["", f"Measured latency at matched accuracy (proxy accuracy, {name}): the fastest model on each "
                      "search's own front that reaches the target.", "",
                  "| target top-1 | latency-steered search ms | FLOPs-steered search ms | FLOPs / latency |",
                  "|---|---:|---:|---:|"]
        for row in d["flops_vs_latency"]:
            lat, flo = row["latency_search_ms"], row["flops_search_ms"]
            ratio = f"{flo / lat:.2f}x" if lat and flo else "-"
            lines.append(f"| {100 * row['target_top1']:.2f} % (teacher - {row['points_below_teacher']}) | "
                         f"{ms(lat)} | {ms(flo)} | {ratio} |")
        lines += ["", flops_verdict(d["flops_vs_latency"])]
        lines.append("")
    return "\n".join(lines) + "\n"


def verdict(methods: dict) -> str:
    """Whether hilas's recovered front beats the others', in words."""
    best = max(methods, key=lambda m: methods[m]["hypervolume"])
    if best == "hilas":
        return "hilas's recovered front has the largest hypervolume."
    beaten_by = [m for m in methods if m != "hilas" and methods[m]["hypervolume"] > methods["hilas"]["hypervolume"]]
    verb = "reaches" if len(beaten_by) == 1 else "reach"
    return f"**hilas loses here**: {' and '.join(beaten_by)} {verb} a larger hypervolume after recovery."


def flops_verdict(rows: list[dict]) -> str:
    """At how many accuracy targets each search found the faster model; within TIE of each other counts as even."""
    pairs = [(r["latency_search_ms"], r["flops_search_ms"]) for r in rows
             if r["latency_search_ms"] and r["flops_search_ms"]]
    flops_faster = sum(flo < lat * (1 - TIE) for lat, flo in pairs)
    latency_faster = sum(lat < flo * (1 - TIE) for lat, flo in pairs)
    even = len(pairs) - flops_faster - latency_faster
    text = (f"Of {len(rows)} targets, the latency-steered search's model is faster at {latency_faster}, the "
            f"FLOPs-steered search's at {flops_faster}, and at {even} the two are within {TIE:.0%} of each other")
    text += f", and {len(rows) - len(pairs)} unreached by one of them." if len(pairs) < len(rows) else "."
    return f"**{text}**" if flops_faster else text


def percent(value: float | None) -> str:
    return "none that fast" if value is None else f"{100 * value:.2f} %"


def ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
