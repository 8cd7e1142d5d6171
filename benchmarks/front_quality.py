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

The fronts of hilas, random and uniform L1 are recovered by hilas's recipe (`hilas front recover`'s:
distillation from the teacher on the few-shot images only, a member keeping its weights where that
scores lower; at most `members` members per front, spread along it) and scored on the validation split.
The members of hilas's front and the uniform-L1 models are also recovered by the plain loop of
`benchmarks.baselines` (what a careful user writes in twenty lines), from the same starting weights, so
the table separates what the search finds (hilas against uniform L1 under one recipe) from what
recovery adds (one set of models under the two recipes). Hypervolume is taken in (error, latency / teacher latency)
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

import numpy as np
from torch import nn

from hilas.devices import export_onnx
from hilas.evaluators import Recipe, recalibrate_batchnorm, top1
from hilas.search import RunConfig, load_config
from hilas.search.results.fronts import area_dominated, non_dominated, run_fronts
from hilas.search.results.recover import recover_front, recovered_or_kept
from hilas.search.runs import resolve_devices, start_run, started_pool
from hilas.search.setup.proxy import feature_layers, proxy_accuracy, proxy_model
from hilas.search.setup.task import SearchTask, load_task, make_space
from hilas.search.store import Store

from .baselines import PLAIN_STEPS, plain_distillation, plain_loop, pruned_uniformly
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
    members: int  # front members recovered per method
    ratios: tuple[float, ...] = RATIOS
    recipe: Recipe = Recipe()  # hilas's recovery
    plain_steps: int = PLAIN_STEPS  # the plain loop's


FULL = {"mnist": Budget(64, 16, 6), "cifar10": Budget(48, 16, 6)}
QUICK = {"mnist": Budget(16, 8, 3, (0.3, 0.6), Recipe(steps=10), 10)}


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
    methods = {"hilas": methods["hilas"], "hilas, plain loop": None, "random": methods["random"]}
    methods["hilas, plain loop"] = plain_recovered(cfg, task, runs / "hilas", methods["hilas"], budget)
    methods["uniform-l1"], methods["uniform-l1, plain loop"] = uniform_l1(cfg, task, budget)
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
        after = recover_front(run_dir, device=DEVICE, recipe=budget.recipe, members=budget.members, host="cpu")[DEVICE]
        result["recovery_seconds"] = time.perf_counter() - start
        proxy = {p.model_key: p.accuracy for p in front.evaluated}
        baseline_key = after.baseline.model_key if after.baseline else None
        result["recovered"] = [{"candidate": p.candidate, "top1_proxy": proxy[p.model_key],
                                "top1_recovered": p.accuracy, "kept": p.kept, "baseline": p.model_key == baseline_key,
                                "median_ms": p.latency.median_ms} for p in after.evaluated]
    return result


def plain_recovered(cfg: RunConfig, task: SearchTask, run_dir: Path, searched_: dict, budget: Budget) -> dict:
    """The members `front recover` recovered in a search (run with `cfg`), recovered by the plain loop instead,
    from the weights the search scored (the unpruned model is the teacher, as it is)."""
    start = time.perf_counter()
    chosen = {r["candidate"]: r for r in searched_["recovered"]}
    layers = feature_layers(task.model, task.example_input) if cfg.proxy == "distillation" else []
    store = Store.open(run_dir)
    try:
        space = make_space(task, cfg, run_dir=run_dir)
        baseline_key = store.baseline_key
        rows = []
        for row in (c for c in store.candidates() if c.candidate in chosen):
            model = space.decode(np.array([int(bit) for bit in row.genome], dtype=np.int64)).build()
            if row.model_key != baseline_key:
                model = plain_distillation(proxy_model(model, task, cfg, layers), task.model, task.calibration_x,
                                           budget.plain_steps)
            rows.append({**chosen[row.candidate], "top1_recovered": top1(model, task.validation_x, task.validation_y),
                         "kept": None})
    finally:
        store.close()
    return {"evaluations": searched_["evaluations"], "search_seconds": searched_["search_seconds"],
            "recovery_seconds": time.perf_counter() - start, "recovered": rows}


def uniform_l1(cfg: RunConfig, task: SearchTask, budget: Budget) -> tuple[dict, dict]:
    """Torch-Pruning's L1 magnitude pruner at each ratio, every layer alike; each model measured on the
    device, scored by the search's proxy, and recovered by hilas's recipe (as `front recover` recovers a member)
    and, from the same pruned weights, by the plain loop."""
    start = time.perf_counter()
    models = {ratio: pruned_uniformly(task.model, task.example_input, ratio) for ratio in budget.ratios}
    latencies = measured(cfg, {f"uniform-l1-{ratio}": model for ratio, model in models.items()}, task)
    search_s = time.perf_counter() - start
    layers = feature_layers(task.model, task.example_input)
    rows: dict[str, list[dict]] = {"hilas": [], "plain": []}
    seconds = {"hilas": 0.0, "plain": 0.0}
    for ratio, model in models.items():
        proxy = proxy_accuracy(copy.deepcopy(model), task, cfg, [])
        common = {"ratio": ratio, "top1_proxy": proxy, "median_ms": latencies[f"uniform-l1-{ratio}"]}
        start = time.perf_counter()
        _, after, _, kept = recovered_or_kept(recalibrate_batchnorm(copy.deepcopy(model), task.calibration_x), task,
                                              layers, budget.recipe, "cpu")
        seconds["hilas"] += time.perf_counter() - start
        rows["hilas"].append({**common, "top1_recovered": after, "kept": kept})
        start = time.perf_counter()
        plain = plain_distillation(model, task.model, task.calibration_x, budget.plain_steps)
        seconds["plain"] += time.perf_counter() - start
        rows["plain"].append({**common, "top1_recovered": top1(plain, task.validation_x, task.validation_y),
                              "kept": None})
    return tuple({"evaluations": len(models), "search_seconds": search_s, "recovery_seconds": seconds[recipe],
                  "recovered": rows[recipe]} for recipe in ("hilas", "plain"))


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
                    raise SystemExit(f"{DEVICE} could not measure {r.structure_key}: {r.error}")
                medians[r.structure_key] = r.latency.median_ms
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
                  f"at most {b['members']} members recovered per front; hilas's recipe: "
                  f"{Recipe(**b['recipe']).describe()}, each member keeping its weights where that scores lower; "
                  f"the plain loop: {plain_loop(b['plain_steps'])}.", "",
                  "| method | evaluations | search s | recovery s | hypervolume | top-1 at 0.5x latency | "
                  "top-1 at 0.7x latency |", "|---|---:|---:|---:|---:|---:|---:|"]
        best = max(r["hypervolume"] for r in d["methods"].values())
        for method, r in d["methods"].items():
            hv = f"{r['hypervolume']:.3f}"
            lines.append(f"| {method} | {r['evaluations']} | {r['search_seconds']:.0f} | {r['recovery_seconds']:.0f} | "
                         f"{'**' + hv + '**' if r['hypervolume'] == best else hv} | {percent(r['top1_at']['0.5'])} | "
                         f"{percent(r['top1_at']['0.7'])} |")
        lines += ["", verdict(d["methods"]), "", recovery_verdict(d["methods"])]
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


def recovery_verdict(methods: dict) -> str:
    """What hilas's recipe adds over the plain loop on the same models: hypervolume of both fronts, and per
    uniform-L1 structure the margin in top-1."""
    hv = {m: methods[m]["hypervolume"] for m in ("hilas", "hilas, plain loop", "uniform-l1", "uniform-l1, plain loop")}
    margins = [(a["ratio"], a["top1_recovered"] - b["top1_recovered"]) for a, b in
               zip(methods["uniform-l1"]["recovered"], methods["uniform-l1, plain loop"]["recovered"])]
    text = (f"Recovery, same models: hilas's recipe against the plain loop gives hypervolume {hv['hilas']:.3f} against "
            f"{hv['hilas, plain loop']:.3f} on hilas's front and {hv['uniform-l1']:.3f} against "
            f"{hv['uniform-l1, plain loop']:.3f} on uniform L1's; top-1 margin per uniform-L1 structure (points): "
            + ", ".join(f"{ratio:.0%} {100 * m:+.2f}" for ratio, m in margins) + ".")
    return f"**{text}**" if min(m for _, m in margins) < 0 else text


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
