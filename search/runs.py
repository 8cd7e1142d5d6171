"""Starting, resuming and listing runs: what the CLI and the Python API both call."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from hilas.devices import (LOCAL_CPU, DevicePool, DeviceRegistry, DeviceSpec, DeviceUnavailable, LatencyDatabase,
                     fingerprint, spec_from_table, spec_to_table)

from .config import RunConfig
from .engine import Search, keep_host_off
from .errors import UserError
from .fronts import Front, run_fronts
from .store import RecoveredRow, Store, is_run_dir
from .task import SearchTask, check_searchable, load_task, make_space


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
        Search(store, space, task, pool, cfg, infos, database, on_progress=progress.on_evaluation).run()
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
            store.set("reference_accuracy", task.reference_accuracy)
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
        cfg = RunConfig.from_dict(store.get("config"))
        specs = resolve_devices(cfg)
        task = load_task(cfg, progress.on_train_epoch)
        if task.split != store.get("split"):
            raise UserError(f"{run_dir}: the data split differs from the one this run started with; "
                            "it cannot be resumed with this version of hilas")
        with started_pool(cfg, specs) as (pool, infos):
            _check_same_devices(Path(run_dir), store, infos)
            store.forget_lost_device_failures()
            store.set("resumed", time.time())
            return _execute(Path(run_dir), cfg, task, store, pool, infos, progress)
    finally:
        store.close()


def open_run(run_dir: Path) -> Store:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a hilas run (no run.sqlite in it)")
    try:
        return Store.open(run_dir)
    except ValueError as e:
        raise UserError(str(e)) from None


def fronts(run_dir: Path, accuracy_kind: str = "proxy") -> dict[str, Front]:
    """The fronts of a finished or unfinished run, one per device, by the search's proxy accuracy or (accuracy_kind
    "recovered") by the accuracy after `hilas front recover`."""
    store = open_run(run_dir)
    try:
        return run_fronts(Path(run_dir), store, accuracy_kind)
    finally:
        store.close()


def recovered(run_dir: Path) -> list[RecoveredRow]:
    """The candidates the run's latest `front recover` settings recovered."""
    store = open_run(run_dir)
    try:
        latest = store.get("recovery")
        return store.recovered(latest["method"]) if latest else []
    finally:
        store.close()


def summary(run_dir: Path) -> dict:
    """What the last session of a run did (latencies measured, reused, failed; drift repeats)."""
    store = open_run(run_dir)
    try:
        return store.get("summary", {})
    finally:
        store.close()


def list_runs(root: Path) -> list[dict]:
    """Every run directory directly under `root` (or `root` itself), newest first."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"directory not found: {root}")
    dirs = [root] if is_run_dir(root) else sorted(p for p in root.iterdir() if is_run_dir(p))
    out = []
    for d in dirs:
        try:
            store = open_run(d)
        except UserError as e:
            out.append({"run": str(d), "status": f"unreadable: {e}", "created": d.stat().st_mtime, "devices": [],
                        "budget": 0, "candidates": 0, "measurements": 0, "from_database": 0, "failures": 0})
            continue
        try:
            cfg = store.get("config")
            out.append({"run": str(d), "status": store.get("status"), "created": store.get("created"),
                        "devices": cfg["devices"], "budget": cfg["budget"], **store.counts()})
        finally:
            store.close()
    return sorted(out, key=lambda r: r["created"], reverse=True)
