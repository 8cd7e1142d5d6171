"""A chosen candidate taken out of a run: ONNX, a state dict with the structure to rebuild it, a summary.

The weights are the ones the run scored: after `hilas front recover`, the member's recovered weights;
otherwise the search's proxy weights (the kept weights of the base model with BatchNorm statistics
re-estimated on the run's few-shot images). Either way the exported model reproduces the accuracy
reported for it (export checks that it does). `structure.json` names the base model and says which
output channels of each channel group are kept and which blocks are dropped; `load_model` cuts
that structure from the base architecture and loads the state dict into it.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from hilas.devices import MeasurementError, export_onnx
from hilas.evaluators import top1
from hilas.search.config import RunConfig
from hilas.search.errors import UserError
from hilas.search.results.fronts import Front, run_fronts
from hilas.search.results.recover import recovered_weights
from hilas.search.setup.proxy import feature_layers, proxy_description, proxy_model
from hilas.search.setup.task import base_architecture, compose_space, load_task, make_space
from hilas.search.store import CandidateRow, Store, open_run
from hilas.spaces import BlockDropSpace, ComposedSpace, FilterMaskSpace, Variant

EXPORT_FORMAT = "hilas-export-2"  # 2: "structure_key" and "model_key" (format 1: "arch_key" and "key")
READ_FORMATS = {"hilas-export-1": {"arch_key": "structure_key", "key": "model_key"}, EXPORT_FORMAT: {}}
ONNX_NAME, WEIGHTS_NAME, STRUCTURE_NAME, SUMMARY_NAME = "model.onnx", "state_dict.pt", "structure.json", "README.md"


WEIGHTS = ("recovered", "proxy")


def export_candidate(run_dir: Path, candidate: int, out_dir: Path | None = None,
                     on_train_epoch: Callable[[int, int], None] | None = None, weights: str | None = None) -> Path:
    """Write candidate `candidate` of a run (the id `hilas front show` prints) to `out_dir`
    (default RUN_DIR/exports/candidate-ID) and return that directory.

    `weights`: "recovered" (the default where `front recover` recovered the candidate) or "proxy" (the
    weights the search scored)."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "exports" / f"candidate-{candidate}"
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} already exists and is not an empty directory; choose another -o")
    store = open_run(run_dir)
    try:
        row, accuracy = scored_candidate(run_dir, store, candidate)
        recovered = store.recovered_accuracy(row.model_key)
        weights = weights or ("recovered" if recovered else "proxy")
        if weights not in WEIGHTS:
            raise UserError(f"--weights must be one of {', '.join(WEIGHTS)}, got '{weights}'")
        if weights == "recovered" and not recovered:
            raise UserError(f"candidate {candidate} of {run_dir} has not been recovered; recover the front with "
                            f"`hilas front recover {run_dir}`, or export the search's weights with --weights proxy")
        cfg = RunConfig.from_dict(store.config)
        if cfg.binary:
            raise UserError("export cannot rebuild binary-width candidates yet; it exports filter masks and block "
                            "drops")
        task = load_task(cfg, on_train_epoch)
        if task.split != store.split:
            raise UserError(f"{run_dir}: the data split differs from the one the run used; export it with the "
                            "version of hilas that ran it")
        space = make_space(task, cfg, run_dir=run_dir)
        chosen = space.decode(np.array([int(bit) for bit in row.genome], dtype=np.int64))
        if chosen.model_key != row.model_key:
            raise UserError(f"{run_dir}: this version of hilas decodes candidate {candidate} to another model; "
                            "export it with the version that ran the search")
        structure = describe_structure(space, chosen, cfg, tuple(task.example_input.shape))
        if weights == "recovered":
            model, accuracy = recovered_model(run_dir, chosen, candidate), recovered.accuracy
            how = f"recovered by `hilas front recover` ({recovered.method})"
            if recovered.kept == "before":
                how += ("; recovery scored lower than the weights it started from, so those were kept (the search's "
                        "proxy treatment on the recovery's few-shot images)")
        else:
            layers = feature_layers(task.model, task.example_input) if cfg.proxy == "distillation" else []
            model, how = proxy_model(chosen.build(), task, cfg, layers), None
        scored = top1(model, task.validation_x, task.validation_y)
        if scored != accuracy:
            raise UserError(f"candidate {candidate} scores {100 * scored:.2f} % now but {100 * accuracy:.2f} % in "
                            f"{run_dir}: the base model's weights are not the ones the run searched (was the trained "
                            "default in the cache retrained, or the model file changed?); export with the files "
                            "the run used")
        try:
            onnx = export_onnx(model, task.example_input, chosen.structure_key).onnx
        except MeasurementError as e:
            raise UserError(str(e)) from None
        summary = summary_markdown(run_dir, store, row, accuracy, structure, out_dir, how)
    finally:
        store.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ONNX_NAME).write_bytes(onnx)
    torch.save(model.state_dict(), out_dir / WEIGHTS_NAME)
    (out_dir / STRUCTURE_NAME).write_text(json.dumps({**structure, "run": str(run_dir), "candidate": candidate},
                                                     indent=2) + "\n")
    (out_dir / SUMMARY_NAME).write_text(summary)
    return out_dir


def recovered_model(run_dir: Path, chosen: Variant, candidate: int) -> nn.Module:
    """The candidate's structure with the weights `front recover` saved for it."""
    path = recovered_weights(run_dir, candidate)
    if not path.is_file():
        raise UserError(f"{path} is missing, though the run's store says candidate {candidate} was recovered; "
                        f"recover it again with `hilas front recover {run_dir}`")
    model = chosen.build()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def scored_candidate(run_dir: Path, store: Store, candidate: int) -> tuple[CandidateRow, float]:
    """The candidate's row and its stored accuracy; a missing or failed candidate is the user's error."""
    row = next((c for c in store.candidates() if c.candidate == candidate), None)
    if row is None:
        raise UserError(f"run {run_dir} has no candidate {candidate}; `hilas front show {run_dir}` lists the ids "
                        f"on its fronts")
    status, accuracy, message = store.accuracy(row.model_key) or ("not evaluated", None, None)
    if accuracy is None:
        raise UserError(f"candidate {candidate} of {run_dir} has no accuracy ({status}"
                        f"{': ' + message if message else ''}); choose one that `hilas front show` lists")
    return row, accuracy


def describe_structure(space: ComposedSpace, chosen: Variant, cfg: RunConfig,
                       input_shape: tuple[int, ...]) -> dict:
    """The structure as plain data: kept output channels (indices into the base model's) of each live
    channel group, with the layers the group spans, and the dropped blocks."""
    parts = space.parts if isinstance(space, ComposedSpace) else [space]
    unknown = [type(p).__name__ for p in parts if not isinstance(p, (BlockDropSpace, FilterMaskSpace))]
    if unknown:
        raise UserError(f"export cannot describe a {', '.join(unknown)} yet; it exports filter masks and block "
                        "drops")
    kept = {}
    for part, genes in zip(space.parts, space.split(chosen.genome)):
        if isinstance(part, FilterMaskSpace):
            for group, bits in zip(part.groups, part.slices(genes)):
                if chosen.widths.get(group.name):  # 0: the whole group lies inside a dropped block
                    kept[group.name] = {"layers": list(group.members), "of": group.size,
                                        "kept": np.flatnonzero(bits).tolist()}
    return {"format": EXPORT_FORMAT,
            "base_model": {"name": cfg.model, "factory": cfg.model_factory, "export": cfg.model_export,
                           "input_shape": list(input_shape)},
            "space": {"masks": cfg.masks, "drops": cfg.drops},
            "kept_channels": kept, "dropped_blocks": list(chosen.dropped),
            "structure_key": chosen.structure_key, "model_key": chosen.model_key}


def load_model(export_dir: str | Path) -> nn.Module:
    """The exported candidate as a PyTorch module in eval mode, rebuilt from its structure.json and
    state_dict.pt (the export's ONNX file is the same model for other runtimes)."""
    export_dir = Path(export_dir)
    structure_path, weights_path = export_dir / STRUCTURE_NAME, export_dir / WEIGHTS_NAME
    if not structure_path.is_file() or not weights_path.is_file():
        raise UserError(f"{export_dir} is not a hilas export (it needs {STRUCTURE_NAME} and {WEIGHTS_NAME}); "
                        "make one with `hilas front export RUN_DIR CANDIDATE`")
    structure = json.loads(structure_path.read_text())
    if structure.get("format") not in READ_FORMATS:
        raise UserError(f"{structure_path} is in format {structure.get('format')!r}; this version of hilas "
                        f"reads {', '.join(map(repr, READ_FORMATS))}")
    structure = {READ_FORMATS[structure["format"]].get(k, k): v for k, v in structure.items()}
    base = structure["base_model"]
    space = compose_space(base_architecture(base), torch.zeros(base["input_shape"]),
                          **structure["space"])
    rebuilt = space.decode(genome_of(space, structure))
    if rebuilt.structure_key != structure["structure_key"]:
        raise UserError(f"{structure_path} describes structure {structure['structure_key']} but rebuilds as "
                        f"{rebuilt.structure_key}; load it with the version of hilas that exported it")
    model = rebuilt.build()
    model.load_state_dict(torch.load(weights_path, weights_only=True))
    return model.eval()


def genome_of(space: ComposedSpace, structure: dict) -> np.ndarray:
    """The genome that decodes to the described structure (bits of groups inside dropped blocks are 1)."""
    dropped, kept = set(structure["dropped_blocks"]), structure["kept_channels"]
    slices = []
    for part in space.parts:
        if isinstance(part, BlockDropSpace):
            unknown = dropped - set(part.blocks)
            if unknown:
                raise UserError(f"the export drops blocks {sorted(unknown)} that the base model has not; "
                                f"its droppable blocks: {', '.join(part.blocks)}")
            slices.append(np.array([b in dropped for b in part.blocks], dtype=np.int64))
        elif isinstance(part, FilterMaskSpace):
            groups = {g.name: g for g in part.groups}
            unknown = set(kept) - set(groups)
            if unknown:
                raise UserError(f"the export keeps channels of groups {sorted(unknown)} that the base model "
                                f"has not; its groups: {', '.join(groups)}")
            for group in part.groups:
                bits = np.ones(group.size, dtype=np.int64)
                if group.name in kept:
                    bits[:] = 0
                    bits[kept[group.name]["kept"]] = 1
                slices.append(bits)
    return np.concatenate(slices)


def summary_markdown(run_dir: Path, store: Store, row: CandidateRow, accuracy: float, structure: dict,
                     out_dir: Path, recovered: str | None = None) -> str:
    """The export's README: what the model scores, how fast it ran where, what it is, how to load it."""
    fronts = run_fronts(run_dir, store)
    stats = store.structure(row.structure_key)
    split = store.split
    base_row = store.accuracy(store.baseline_key) if store.baseline_key else None
    base_stats = next((f.baseline for f in fronts.values() if f.baseline), None)
    on = [d for d, f in fronts.items() if any(p.model_key == row.model_key for p in f.points)]
    lines = [f"# Variant {row.candidate} of run `{run_dir.name}`", "",
             f"Exported by hilas {version('hilas')} on {time.strftime('%Y-%m-%d %H:%M')} from `{run_dir}`. "
             + (f"On the Pareto front of {', '.join(on)}." if on else "Not on a Pareto front of the run."), "",
             "## Accuracy", "",
             f"Top-1 **{100 * accuracy:.1f} %** on the run's {len(split['validation'])} validation images"
             + (f" (the unpruned baseline: {100 * base_row[1]:.1f} %)" if base_row and base_row[1] is not None
                else "") + ". "
             + (f"These weights were {recovered}. " if recovered else
                f"This is the search's proxy: {proxy_description(RunConfig.from_dict(store.config), structure)}. ")
             + "The exported weights are those scored, so the model scores the same on the same images.", "",
             "## Latency", "",
             "| device | median ms | p90 ms | samples | samples CV % | rounds CV % | speed-up over the baseline |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [latency_row(device, front, row) for device, front in fronts.items()]
    lines += ["", "Medians of independent rounds; settings, fingerprints and raw samples are in the run's store "
                  "(`hilas front report` shows them).", "", "## Structure", ""]
    if stats:
        lines.append(f"{stats['params']:,} parameters and {stats['flops'] / 1e6:.2f} MFLOPs"
                     + (f" ({stats['params'] / base_stats.params:.0%} and {stats['flops'] / base_stats.flops:.0%} "
                        "of the unpruned baseline's)" if base_stats else "") + ".")
    lines += ["", f"Dropped blocks: {', '.join(structure['dropped_blocks']) or 'none'}.", "",
              "| channel group | layers | channels kept |", "|---|---|---:|"]
    lines += [f"| {name} | {', '.join(g['layers'])} | {len(g['kept'])} of {g['of']} |"
              for name, g in structure["kept_channels"].items()]
    shape = structure["base_model"]["input_shape"]
    lines += ["", "## Files", "",
              f"- `{ONNX_NAME}`: input `input`, float32 {shape}; output `logits`.",
              f"- `{WEIGHTS_NAME}` and `{STRUCTURE_NAME}` (kept channel indices per group, dropped blocks, base "
              "model): the PyTorch module, rebuilt by", "",
              "  ```python", "  import hilas", f'  model = hilas.load_model("{out_dir}")', "  ```", ""]
    return "\n".join(lines)


def latency_row(device: str, front: Front, row: CandidateRow) -> str:
    point = next((p for p in front.evaluated if p.model_key == row.model_key), None)
    if point is None:
        return f"| {device} | not measured | | | | | |"
    lat, base = point.latency, front.baseline
    speedup = f"{base.latency.median_ms / lat.median_ms:.2f}x" if base else "-"
    return (f"| {device} | {lat.median_ms:.4f} | {lat.p90_ms:.4f} | {lat.n} | {100 * lat.cv:.1f} | "
            f"{100 * lat.rounds_cv:.1f} | {speedup} |")
