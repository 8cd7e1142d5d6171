"""Which recovery recipe recovers: each ingredient on and off, steps and learning rate, against the plain loop.

    python -m benchmarks.recovery_ablation                  # MNIST and CIFAR-10, every uniform-L1 ratio
    python -m benchmarks.recovery_ablation --quick          # MNIST, two ratios, three recipes: the wiring
    python -m benchmarks.recovery_ablation --datasets mnist --ratios 0.5 --recipes "default,plain-loop"

The structures are Torch-Pruning's uniform L1 pruning of the benchmark teachers (`benchmarks/train_teacher`)
at 10 ... 80 %, the same as `benchmarks/front_quality`'s uniform-L1 baseline. Each is recovered from the
same starting weights (the pruned model, BatchNorm re-estimated on the few-shot images) by every recipe,
on the few-shot images only, and scored on the validation split. Per structure the recipes run one after
the other on the same quiet machine, so their seconds compare; the plain loop is the twenty lines of
`benchmarks.baselines.plain_distillation`, which share no code with hilas.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from hilas.evaluators import Recipe, distill, recalibrate_batchnorm, top1
from hilas.search import load_config
from hilas.search.setup.proxy import feature_layers
from hilas.search.setup.task import SearchTask, load_task

from .baselines import plain_distillation, plain_loop, pruned_uniformly
from .machine import machine, measured_on, versions
from .results_io import RESULTS, update_readme, write_atomically
from .train_teacher import TEACHERS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
ABLATION_RATIOS = (0.2, 0.5, 0.8)  # every recipe runs on these; the core recipes on every ratio
DEFAULT = Recipe()


def before_21(task: SearchTask) -> Recipe:
    """The recipe `front recover` used before the recovery issue (#21): 30 epochs at batch 32, BatchNorm
    frozen, mixup, stage features through 1x1 regressors."""
    return Recipe(steps=30 * math.ceil(len(task.calibration_x) / 32), lr=1e-3, batch_size=32, temperature=4.0,
                  batchnorm="frozen", shift=1 / 14, mixup=True, feature_weight=1.0)


# name -> the recipe, given the task (None: the plain loop)
RECIPES: dict[str, Callable[[SearchTask], Recipe | None]] = {
    "plain-loop": lambda task: None,
    "before-#21": before_21,
    "before-#21 without features": lambda task: dataclasses.replace(before_21(task), feature_weight=0.0),
    "before-#21 without mixup": lambda task: dataclasses.replace(before_21(task), mixup=False),
    "before-#21 with BatchNorm train": lambda task: dataclasses.replace(before_21(task), batchnorm="train"),
    "default": lambda task: DEFAULT,
    "default with BatchNorm frozen": lambda task: dataclasses.replace(DEFAULT, batchnorm="frozen"),
    "default + mixup": lambda task: dataclasses.replace(DEFAULT, mixup=True),
    "default without features": lambda task: dataclasses.replace(DEFAULT, feature_weight=0.0),
    "default without shifts": lambda task: dataclasses.replace(DEFAULT, shift=0.0),
    "default at 150 steps": lambda task: dataclasses.replace(DEFAULT, steps=150),
    "default at 600 steps": lambda task: dataclasses.replace(DEFAULT, steps=600),
    "default at lr 1e-3": lambda task: dataclasses.replace(DEFAULT, lr=1e-3),
    "default at lr 1e-2": lambda task: dataclasses.replace(DEFAULT, lr=1e-2),
    "default at batch 32": lambda task: dataclasses.replace(DEFAULT, batch_size=32),
}
CORE_RECIPES = ("plain-loop", "before-#21", "default")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recovery_ablation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="MNIST, ratios 0.3 and 0.6, three recipes")
    parser.add_argument("--datasets", default=None, help="comma-separated (default: mnist,cifar10)")
    parser.add_argument("--ratios", default=None, help="comma-separated pruning ratios (default: 0.1 ... 0.8)")
    parser.add_argument("--recipes", default=None, help=f"comma-separated, of: {', '.join(RECIPES)}")
    parser.add_argument("--data", type=Path, default=DATA, help="the benchmark data folder (default ../shared/data)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON and markdown")
    parser.add_argument("--render", action="store_true", help="measure nothing: write the tables again from the "
                                                              "last run's JSON")
    args = parser.parse_args(argv)
    partial = args.quick or any((args.datasets, args.ratios, args.recipes))
    name = "recovery-ablation-quick" if partial else "recovery-ablation"
    if args.render:
        publish(json.loads((args.results / f"{name}.json").read_text()), args.results, name,
                readme=not partial and args.results == RESULTS)
        return
    datasets = (args.datasets or ("mnist" if args.quick else "mnist,cifar10")).split(",")
    ratios = tuple(float(r) for r in args.ratios.split(",")) if args.ratios else (0.3, 0.6) if args.quick else RATIOS
    recipes = args.recipes.split(",") if args.recipes else list(CORE_RECIPES if args.quick else RECIPES)
    unknown = [r for r in recipes if r not in RECIPES] + [d for d in datasets if d not in TEACHERS]
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}")
    started, before = time.perf_counter(), machine()
    everywhere = ratios if partial else ABLATION_RATIOS
    command = " ".join(["python -m benchmarks.recovery_ablation", *(sys.argv[1:] if argv is None else argv)])
    record = {"command": command, "date": datetime.now().isoformat(timespec="seconds"), "versions": versions(),
              "torch_threads": torch.get_num_threads(), "plain_loop": plain_loop(), "datasets": {}}
    for dataset in datasets:  # the record is written after each dataset: a killed run keeps what it finished
        record["datasets"][dataset] = ablation(dataset, args.data, ratios, recipes, everywhere)
        record.update(seconds=round(time.perf_counter() - started),
                      machine={**before, "load_average_after": machine()["load_average"]})
        write_atomically(args.results / f"{name}.json", json.dumps(record, indent=1) + "\n")
    publish(record, args.results, name, readme=not partial and args.results == RESULTS)


def ablation(dataset: str, data_dir: Path, ratios: tuple[float, ...], recipes: list[str],
             everywhere: tuple[float, ...]) -> dict:
    """The recipes on the uniform-L1 structures of one dataset's teacher: all of them at the ratios in
    `everywhere`, the core recipes only at the others."""
    teacher_dir = TEACHERS[dataset](data_dir, progress=lambda e, n: print(f"{dataset} teacher: epoch {e}/{n}",
                                                                        flush=True))
    task = load_task(load_config(teacher_dir / "hilas.toml"))
    layers = feature_layers(task.model, task.example_input)
    rows = []
    for ratio in ratios:
        start = recalibrate_batchnorm(pruned_uniformly(task.model, task.example_input, ratio), task.calibration_x)
        row = {"ratio": ratio, "params": sum(p.numel() for p in start.parameters()),
               "top1_before": top1(start, task.validation_x, task.validation_y), "recipes": {}}
        chosen = recipes if ratio in everywhere else [r for r in recipes if r in CORE_RECIPES]
        for name in chosen:
            recipe = RECIPES[name](task)
            began = time.perf_counter()
            model = recovered_by(recipe, copy.deepcopy(start), task, layers)
            seconds = time.perf_counter() - began
            row["recipes"][name] = {"top1": top1(model, task.validation_x, task.validation_y), "seconds": seconds}
            print(f"{dataset} {ratio:.1f} {name}: {100 * row['recipes'][name]['top1']:.2f} % in {seconds:.1f} s",
                  flush=True)
        rows.append(row)
    return {"teacher_top1": task.reference_accuracy, "ablation_ratios": list(everywhere),
            "few_shot_images": len(task.calibration_x),
            "validation_images": len(task.validation_y),
            "recipes": {n: RECIPES[n](task).describe() if RECIPES[n](task) else plain_loop() for n in recipes},
            "structures": rows}


def recovered_by(recipe: Recipe | None, model: nn.Module, task: SearchTask, layers: list[str]) -> nn.Module:
    if recipe is None:
        return plain_distillation(model, task.model, task.calibration_x)
    return distill(model, task.model, task.calibration_x, recipe, layers=layers)


def publish(record: dict, results: Path, name: str, readme: bool) -> None:
    table = markdown(record)
    write_atomically(results / f"{name}.md", f"# Recovery ablation\n\n{table}")
    if readme:
        update_readme("recovery-ablation", table)
    print(table)


def markdown(record: dict) -> str:
    lines = [f"{measured_on(record)} {record['torch_threads']} torch threads.", ""]
    for dataset, d in record["datasets"].items():
        rows, recipes = d["structures"], list(d["recipes"])
        lines += [f"**{dataset}**: teacher top-1 {100 * d['teacher_top1']:.2f} % on {d['validation_images']} "
                  f"validation images; {d['few_shot_images']} few-shot images. Top-1 % after recovery of each "
                  "uniform-L1 structure (pruning ratio), and seconds per structure (mean over the structures it "
                  "ran on; the ingredient ablation runs on "
                  f"{', '.join(f'{r:.0%}' for r in d['ablation_ratios'])} only); the best recipe per structure in "
                  "bold; "
                  "means over the structures each recipe ran on.", "",
                  "| recipe | " + " | ".join(f"{r['ratio']:.1f}" for r in rows) + " | mean | s |",
                  "|---|" + "---:|" * (len(rows) + 2),
                  "| before recovery | " + " | ".join(f"{100 * r['top1_before']:.2f}" for r in rows)
                  + f" | {100 * mean([r['top1_before'] for r in rows]):.2f} | |"]
        for name in recipes:
            cells, ran = [], [r["recipes"][name] for r in rows if name in r["recipes"]]
            for r in rows:
                if name not in r["recipes"]:
                    cells.append("")
                    continue
                value = r["recipes"][name]["top1"]
                text = f"{100 * value:.2f}"
                cells.append(f"**{text}**" if value == max(v["top1"] for v in r["recipes"].values()) else text)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * mean([v['top1'] for v in ran]):.2f} | "
                                                              f"{mean([v['seconds'] for v in ran]):.1f} |")
        if "default" in recipes and "plain-loop" in recipes:
            margins = [r["recipes"]["default"]["top1"] - r["recipes"]["plain-loop"]["top1"] for r in rows]
            lines += ["", "Default recipe minus the plain loop, points per structure: "
                          + ", ".join(f"{100 * m:+.2f}" for m in margins)
                      + f" (worst {100 * min(margins):+.2f}); seconds, default / plain loop: "
                        f"{seconds_ratio(rows, 'default', 'plain-loop'):.2f}x."]
        lines += ["", "Recipes:", ""] + [f"- **{n}**: {text}" for n, text in d["recipes"].items()] + [""]
    return "\n".join(lines) + "\n"


def seconds_ratio(rows: list[dict], recipe: str, baseline: str) -> float:
    """Mean seconds of `recipe` over those of `baseline`, on the structures both ran on."""
    both = [r["recipes"] for r in rows if recipe in r["recipes"] and baseline in r["recipes"]]
    return mean([r[recipe]["seconds"] for r in both]) / mean([r[baseline]["seconds"] for r in both])


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    main()
