"""PRACTISE in the search: each droppable block is recovered once, at the start of a run, and the drops are
ranked by recovered error per millisecond they save on the run's first device.

The adapters trained here (see `spaces.adapters`) are folded into every candidate that drops their
block, so the accuracy proxy scores drops as recovered, not as raw holes; the ranking seeds the first
population with the best 2, 3... drops together. The adapters are kept in the run directory, so a
resumed run, an export and a recovery all build exactly the models the search scored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from hilas.evaluators import one_thread, train_adapters
from hilas.search.store import Store
from hilas.spaces import (
    AdaptedDrop,
    BlockDropSpace,
    ComposedSpace,
    DropAdapters,
    Space,
    Variant,
    adapter_sites,
    output_layer,
)

if TYPE_CHECKING:  # task.py reads the run's adapters with load_adapters
    from hilas.search.setup.task import SearchTask

ADAPTERS_NAME = "drop-adapters.pt"


def drop_part(space: Space) -> BlockDropSpace | None:
    return next((p for p in getattr(space, "parts", []) if isinstance(p, BlockDropSpace) and p.blocks), None)


def with_recovered_drops(store: Store, space: Space, task: SearchTask, steps: int,
                         costs: Callable[[list[Variant]], dict[str, float]],
                         on_progress: Callable[[str, int, int], None]) -> Space:
    """`space` with its block drops recovered (PRACTISE adapters folded in, drops ranked: see `recover_drops`);
    as it is where it drops no block."""
    part = drop_part(space)
    if part is None or not isinstance(space, ComposedSpace):
        return space
    adapters, ranking = recover_drops(store, space, task, steps, costs, on_progress)
    return space.replaced(part, part.with_adapters(adapters, ranking))


def train_drop_adapters(task: SearchTask, part: BlockDropSpace, steps: int, on_progress: Callable[[str, int, int], None]
                        ) -> tuple[dict[str, DropAdapters], dict[str, float]]:
    """Each block's adapters, trained with the block dropped alone, and the feature error each leaves."""
    names = {m: n for n, m in task.model.named_modules()}
    layer = names[output_layer(task.model, task.example_input)]
    adapters, errors = {}, {}
    for i, block in enumerate(part.blocks):
        adapted = AdaptedDrop(task.model, adapter_sites(task.model, task.example_input, block), part.replacement(block))
        with one_thread():
            errors[block] = train_adapters(adapted.model, adapted.parameters, task.model, task.calibration_x,
                                           layer=layer, steps=steps)
        adapters[block] = adapted.adapters()
        on_progress("recovering droppable blocks", i + 1, len(part.blocks))
    return adapters, errors


def save_adapters(run_dir: Path, adapters: dict[str, DropAdapters]) -> None:
    path = Path(run_dir) / ADAPTERS_NAME
    tmp = path.with_suffix(".tmp")
    torch.save({block: a.to_state() for block, a in adapters.items()}, tmp)
    os.replace(tmp, path)


def load_adapters(run_dir: Path) -> dict[str, DropAdapters] | None:
    """The run's trained adapters, or None if it trained none (yet)."""
    path = Path(run_dir) / ADAPTERS_NAME
    if not path.is_file():
        return None
    states = torch.load(path, map_location="cpu", weights_only=True)
    return {block: DropAdapters.from_state(block, state) for block, state in states.items()}


def rank_drops(errors: dict[str, float], saved_ms: dict[str, float]) -> list[str]:
    """Blocks that save time, from the lowest recovered error per millisecond saved to the highest."""
    return sorted((b for b in errors if saved_ms.get(b, 0.0) > 0), key=lambda b: (errors[b] / saved_ms[b], b))


def recover_drops(store: Store, space: ComposedSpace, task: SearchTask, steps: int,
                  medians: Callable[[list[Variant]], dict[str, float]],
                  on_progress: Callable[[str, int, int], None]) -> tuple[dict[str, DropAdapters], list[str]]:
    """The run's drop adapters (trained now, or read back on resume) and the ranking of its drops.

    `medians` measures candidates on the run's first device and returns the median latency of each
    structure measured (by structure_key). The recoverability of every block is stored in the run
    (`drop_recoverability`: recovered error, milliseconds saved, their ratio).
    """
    part = drop_part(space)
    if part is None:
        return {}, []
    run_dir = store.path.parent
    adapters = load_adapters(run_dir)
    if adapters is None:
        adapters, errors = train_drop_adapters(task, part, steps, on_progress)
        store.drop_recoverability = {b: {"error": e} for b, e in errors.items()}
        save_adapters(run_dir, adapters)
    errors = {b: v["error"] for b, v in store.drop_recoverability.items()}
    index = space.parts.index(part)
    genomes = [space.baseline()]
    for i in range(part.n_var):
        genome = space.split(space.baseline())
        genome[index] = np.eye(part.n_var, dtype=np.int64)[i]
        genomes.append(np.concatenate(genome))
    baseline, *singles = [space.decode(g) for g in genomes]
    measured = medians([baseline, *singles])
    base_ms = measured.get(baseline.structure_key)
    saved = {b: base_ms - measured[c.structure_key] for b, c in zip(part.blocks, singles)
             if base_ms is not None and c.structure_key in measured}
    ranking = rank_drops(errors, saved)
    store.drop_recoverability = {b: {"error": errors[b], "saved_ms": saved.get(b),
                                     "error_per_ms": errors[b] / saved[b] if saved.get(b, 0) > 0 else None}
                                 for b in part.blocks}
    return adapters, ranking
