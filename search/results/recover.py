"""Recovery of a run's front: each front member fine-tuned by few-shot distillation from the original model.

The search scores candidates with a proxy (no weight fine-tuned, or a few distillation steps); this
turns the chosen ones into models that are accurate. Each member starts from the weights the search
scored (kept filters, folded drop adapters, BatchNorm re-estimated: the proxy's treatment on the
recovery's few-shot images), is distilled from the original model by a `Recipe` (see
`evaluators.distillation`; its defaults won the ablation in `benchmarks/recovery_ablation.py`) on the
few-shot images only, and is scored on the run's validation split. A member that scores lower after
distillation than before keeps the weights it started from (the store says so), so recovery only ever
moves a front up. Its structure, and so its latency, does not change: no device is needed. The
unpruned baseline is the original model and is scored as it is.

Every result is written as soon as it is known (the weights under RUN_DIR/recovered/, the accuracy
in the store), so an interrupted recovery goes on where it stopped; members already recovered with
the same settings are skipped.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from hilas.evaluators import Recipe, distill, host_device, top1
from hilas.search.config import RunConfig
from hilas.search.errors import UserError
from hilas.search.results.fronts import Front, Point, run_fronts
from hilas.search.setup.proxy import feature_layers, proxy_model
from hilas.search.setup.task import SearchTask, load_task, make_space
from hilas.search.store import Store, open_run

RECOVERED_DIR = "recovered"


def recover_front(run_dir: Path, *, device: str | None = None, shots: int | None = None,
                  recipe: Recipe = Recipe(), members: int | None = None, host: str = "auto",
                  on_progress: Callable[[str, int, int], None] | None = None,
                  on_train_epoch: Callable[[int, int], None] | None = None) -> dict[str, Front]:
    """Recover the members of the run's fronts (of one device, or all) and return the fronts after recovery.

    `shots` images per class (default: the run's) are drawn as the run drew its few-shot images, and
    never from its validation split. `members` caps how many members of each front are recovered, spread
    evenly from the fastest to the most accurate (default: all). `host` is where the distillation runs:
    "cuda" (the host's GPU), "cpu", or "auto" (the GPU when torch sees one).
    """
    run_dir = Path(run_dir)
    on_progress = on_progress or (lambda what, done, total: None)
    try:
        on = host_device(host)
    except ValueError as e:
        raise UserError(str(e)) from None
    store = open_run(run_dir)
    try:
        cfg = RunConfig.from_dict(store.config)
        if members is not None and members < 2:
            raise UserError(f"--members must be at least 2 (the fastest and the most accurate), got {members}")
        chosen = front_members(run_dir, store, device, members)
        shots = cfg.shots if shots is None else shots
        if shots < 1:
            raise UserError(f"--shots must be at least 1, got {shots}")
        task = recovery_task(run_dir, store, cfg, shots, on_train_epoch)
        space = make_space(task, cfg, run_dir=run_dir)
        layers = feature_layers(task.model, task.example_input)
        method = recovery_method(shots, recipe)
        store.recovery = {"method": method, "shots_per_class": shots, "recipe": dataclasses.asdict(recipe),
                          "few_shot": task.split["few_shot"]}
        (run_dir / RECOVERED_DIR).mkdir(exist_ok=True)
        for i, point in enumerate(chosen):
            done = store.recovered_accuracy(point.model_key)
            if done is None or done.method != method:
                recover_member(store, space, task, cfg, point, layers, recipe, method, run_dir, on,
                               lambda step, total: on_progress("distillation steps", step, total))
            on_progress("front members recovered", i + 1, len(chosen))
        return run_fronts(run_dir, store, "recovered")
    finally:
        store.close()


def recovery_method(shots: int, recipe: Recipe) -> str:
    """How members are recovered, in words: stored with each, so a change of settings recovers them again."""
    return f"distillation on {shots} shots per class: {recipe.describe()}"


def front_members(run_dir: Path, store: Store, device: str | None, limit: int | None = None) -> list[Point]:
    """The members of the run's proxy fronts (one device's, or all devices'), each once, by candidate id;
    at most `limit` per front, evenly spaced along it."""
    fronts = run_fronts(run_dir, store)
    if device is not None and device not in fronts:
        raise UserError(f"run {run_dir} has no device '{device}'; its devices: {', '.join(fronts)}")
    chosen = [fronts[device]] if device else list(fronts.values())
    members = {p.model_key: p for front in chosen for p in spread(front.points, limit)}
    if not members:
        raise UserError(f"run {run_dir} has no front to recover yet; finish it with `hilas search resume {run_dir}`")
    return sorted(members.values(), key=lambda p: p.candidate)


def spread(points: list[Point], limit: int | None) -> list[Point]:
    """`limit` of the front's points (fastest first), evenly spaced, both ends kept; all of them without a limit."""
    if limit is None or len(points) <= limit:
        return points
    return [points[i] for i in sorted({round(j) for j in np.linspace(0, len(points) - 1, limit)})]


def recovery_task(run_dir: Path, store: Store, cfg: RunConfig, shots: int,
                  on_train_epoch: Callable[[int, int], None] | None) -> SearchTask:
    """The run's model and data with `shots` few-shot images per class, refused unless the validation
    split (and the data) are exactly those the run scored on."""
    task = load_task(dataclasses.replace(cfg, shots=shots), on_train_epoch)
    stored = store.split
    varying = ("few_shot", "train", "shots_per_class", "validation")
    same = {k: v for k, v in task.split.items() if k not in varying} == {k: v for k, v in stored.items()
                                                                          if k not in varying}
    if not same:
        raise UserError(f"{run_dir}: the data differs from the data the run was searched on; recover it with the "
                        "same model and data files")
    if task.split["validation"] != stored["validation"]:
        raise UserError(f"--shots {shots} would change the validation split of {run_dir} (it validates on every "
                        f"image outside its {cfg.shots} few-shot ones); recover with --shots {cfg.shots}, or set "
                        "[data] validation for a run whose few-shot set can grow")
    return task


def recover_member(store: Store, space, task: SearchTask, cfg: RunConfig, point: Point, layers: list[str],
                   recipe: Recipe, method: str, run_dir: Path, on: torch.device,
                   on_step: Callable[[int, int], None]) -> None:
    """Distil one front member, keep the better of its weights before and after, save them, then store its
    accuracy on the validation split."""
    row = next(c for c in store.candidates() if c.model_key == point.model_key)
    candidate = space.decode(np.array([int(bit) for bit in row.genome], dtype=np.int64))
    if candidate.model_key != point.model_key:
        raise UserError(f"{run_dir}: this version of hilas decodes candidate {point.candidate} to another model; "
                        "recover it with the version that ran the search")
    start = time.perf_counter()
    model = candidate.build()
    if point.model_key == store.baseline_key:  # the unpruned model is the original: nothing to recover
        accuracy, before, kept = top1(model, task.validation_x, task.validation_y), None, "recovered"
    else:
        model, accuracy, before, kept = recovered_or_kept(proxy_model(model, task, cfg, layers), task, layers, recipe,
                                                          on, on_step)
    path = recovered_weights(run_dir, point.candidate)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    store.add_recovered_accuracy(point.model_key, accuracy, method=method, before=before, kept=kept,
                                 seconds=time.perf_counter() - start)


def recovered_or_kept(start: nn.Module, task: SearchTask, layers: list[str], recipe: Recipe, on: torch.device,
                      on_step: Callable[[int, int], None] | None = None) -> tuple[nn.Module, float, float, str]:
    """`start` distilled by `recipe`, unless that scores lower on the validation split than `start` itself:
    (the model kept, its top-1, the top-1 of `start`, which was kept: "recovered" or "before")."""
    before = top1(start, task.validation_x, task.validation_y)
    after = recovered(copy.deepcopy(start), task, layers, recipe, on, on_step)
    accuracy = top1(after, task.validation_x, task.validation_y)
    return (after, accuracy, before, "recovered") if accuracy >= before else (start, before, before, "before")


def recovered(model: nn.Module, task: SearchTask, layers: list[str], recipe: Recipe = Recipe(),
              on: torch.device | str = "cpu", on_step: Callable[[int, int], None] | None = None) -> nn.Module:
    """The recovery recipe applied to `model`: distillation from the task's model on its few-shot images
    (and, where the recipe matches features, the outputs of `layers`). Benchmarks apply it to models from
    elsewhere, so they compare alike."""
    return distill(model, task.model, task.calibration_x, recipe, layers=layers, device=on, progress=on_step)


def recovered_weights(run_dir: Path, candidate: int) -> Path:
    """Where recovery keeps a member's fine-tuned state dict."""
    return Path(run_dir) / RECOVERED_DIR / f"candidate-{candidate}.pt"
