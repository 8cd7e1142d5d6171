"""Starting and resuming runs: the devices started, the run set up, the loop run. What `Run.start` and
`Run.resume` (and so the CLI) call; reading a run needs none of it (see `store` and `run`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from hilas.devices import (
    LOCAL_CPU,
    DevicePool,
    DeviceRegistry,
    DeviceSpec,
    DeviceUnavailable,
    LatencyDatabase,
    fingerprint,
    spec_from_table,
    spec_to_table,
)
from hilas.search.config import RunConfig
from hilas.search.errors import UserError
from hilas.search.loop.search import Search
from hilas.search.results.fronts import Front, run_fronts
from hilas.search.setup.drops import with_recovered_drops
from hilas.search.setup.task import SearchTask, check_searchable, load_task, make_space
from hilas.search.store import Store, is_run_dir, open_run


@dataclass
class Progress:
    """Callbacks the CLI turns into progress bars; all optional."""

    on_train_epoch: Callable[[int, int], None] | None = None
    on_evaluation: Callable[[str, int, int], None] | None = None


def resolve_devices(cfg: RunConfig, registry: DeviceRegistry | None = None) -> list[DeviceSpec]:
    """The run's device names as specs: from the config's own [device.NAME] tables, the built-in
    local-cpu, or the device registry (`hilas devices`; default: $HILAS_DEVICES or the user's),
    which is read only when a name needs it.
    """
    registered: dict[str, DeviceSpec] | None = None
    specs = []
    for name in cfg.devices:
        if name in cfg.device_definitions:
            specs.append(spec_from_table(name, cfg.device_definitions[name]))
        elif name == LOCAL_CPU.name:
            specs.append(LOCAL_CPU)
        else:
            registered = _registered(registry or DeviceRegistry()) if registered is None else registered
            if name not in registered:
                known = sorted({LOCAL_CPU.name, *cfg.device_definitions, *registered})
                raise UserError(f"unknown device '{name}'; known devices: {', '.join(known)} (add it with "
                                f"`hilas devices add {name} --kind KIND`, or define [device.{name}] in the config)")
            specs.append(registered[name])
    return specs


def _registered(registry: DeviceRegistry) -> dict[str, DeviceSpec]:
    try:
        return registry.devices()
    except ValueError as e:
        raise UserError(str(e)) from None


def with_definitions(cfg: RunConfig, specs: list[DeviceSpec]) -> RunConfig:
    """The config with its registry devices' definitions copied in, as the run stores it: a resumed
    run then finds its devices as they were, whatever happens to the registry since.
    """
    copied = {s.name: spec_to_table(s) for s in specs
              if s.name not in cfg.device_definitions and s.name != LOCAL_CPU.name}
    return dataclasses.replace(cfg, device_definitions={**cfg.device_definitions, **copied})


@contextlib.contextmanager
def started_pool(cfg: RunConfig, specs: list[DeviceSpec]) -> Iterator[tuple[DevicePool, dict[str, dict]]]:
    """A started pool (its devices' infos beside it), with the host kept off cores local agents pinned."""
    pool = DevicePool(specs, cfg.protocol())
    try:
        try:
            infos = pool.start()
        except DeviceUnavailable as e:
            raise UserError(str(e)) from None
        keep_host_off(_pinned_cores(infos))
        yield pool, infos
    finally:
        pool.close()


def _execute(run_dir: Path, cfg: RunConfig, task: SearchTask, store: Store, pool: DevicePool,
             infos: dict[str, dict], progress: Progress) -> dict[str, Front]:
    space = make_space(task, cfg, progress.on_evaluation, run_dir)
    try:
        database = LatencyDatabase()
    except OSError as e:
        raise UserError(str(e)) from None
    try:
        search = Search(store, task, pool, cfg, infos, database, on_progress=progress.on_evaluation)
        if cfg.drops and cfg.drop_recovery_steps:
            space = with_recovered_drops(store, space, task, cfg.drop_recovery_steps, search.structure_costs,
                                         search.on_progress)
        search.run(space)
    finally:
        database.close()
    return run_fronts(run_dir, store)


def _pinned_cores(infos: dict[str, dict]) -> set[int]:
    """Cores that local agents pinned themselves to (remote agents report no pinning)."""
    runtimes = [info.get("runtime") for info in infos.values()]
    return {c for rt in runtimes if isinstance(rt, dict) and rt.get("pinning") == "pinned" for c in rt["cores"]}


def start_run(cfg: RunConfig, run_dir: Path, progress: Progress | None = None,
              registry: DeviceRegistry | None = None) -> dict[str, Front]:
    """Validate everything, then create the run directory and search. Bad input creates nothing.

    Devices the config does not define come from `registry` (default: $HILAS_DEVICES or the user's).
    """
    progress = progress or Progress()
    run_dir = Path(run_dir)
    if is_run_dir(run_dir):
        raise UserError(f"{run_dir} already holds a run; continue it with `hilas search resume {run_dir}` "
                        f"or choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} exists and is not a directory; choose another --out")
    specs = resolve_devices(cfg, registry)
    cfg = with_definitions(cfg, specs)
    task = load_task(cfg, progress.on_train_epoch)
    check_searchable(task, cfg)
    with started_pool(cfg, specs) as (pool, infos):
        store = Store.create(run_dir, cfg.to_dict(), task.split)
        try:
            store.reference_accuracy = task.reference_accuracy
            for spec in specs:
                store.add_device(spec.name, spec.kind, infos[spec.name])
            return _execute(run_dir, cfg, task, store, pool, infos, progress)
        finally:
            store.close()


def _check_same_devices(run_dir: Path, store: Store, infos: dict[str, dict]) -> None:
    """A run's latencies compare only if every device is still the device (and runtime) it was."""
    for name, stored in store.devices().items():
        if name in infos and fingerprint(stored["info"]) != fingerprint(infos[name]):
            before, now = stored["info"], infos[name]
            changed = sorted(k for part in ("device", "runtime")
                             for k in set(before.get(part, {})) | set(now.get(part, {}))
                             if before.get(part, {}).get(k) != now.get(part, {}).get(k))
            raise UserError(f"{run_dir}: device '{name}' is not what it was when the run started (changed: "
                            f"{', '.join(changed) or 'its description'}); its latencies would not compare: "
                            f"start a new run")


def resume_run(run_dir: Path, progress: Progress | None = None) -> dict[str, Front]:
    """Continue a run from its store: finished work is read back, never repeated."""
    progress = progress or Progress()
    store = open_run(run_dir)
    try:
        cfg = RunConfig.from_dict(store.config)
        specs = resolve_devices(cfg)
        task = load_task(cfg, progress.on_train_epoch)
        if task.split != store.split:
            raise UserError(f"{run_dir}: the data split differs from the one this run started with; "
                            "it cannot be resumed with this version of hilas")
        with started_pool(cfg, specs) as (pool, infos):
            _check_same_devices(Path(run_dir), store, infos)
            store.forget_lost_device_failures()
            store.resumed = time.time()
            return _execute(Path(run_dir), cfg, task, store, pool, infos, progress)
    finally:
        store.close()


def keep_host_off(cores: set[int]) -> None:
    """Run the host's accuracy work on the cores no local device agent is pinned to.

    A local CPU agent times models on its own core; host work on that core would show up in its
    measurements as noise.
    """
    if not cores or not hasattr(os, "sched_setaffinity"):
        return
    rest = set(os.sched_getaffinity(0)) - cores
    if rest:
        os.sched_setaffinity(0, rest)
        torch.set_num_threads(len(rest))
