"""`hilas devices add|list|check|remove`: the registry of named devices."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

import typer
from rich.markup import escape
from rich.table import Table

from hilas.devices.agent import DeviceUnavailable, MeasurementError
from hilas.devices.protocol import MeasurementProtocol
from hilas.devices.registry import ENV_VAR, DeviceRegistry, DeviceSpec
from hilas.search.errors import UserError

from .common import err, out, parse_assignments, user_errors

if TYPE_CHECKING:
    from hilas.devices.check import DeviceCheck

app = typer.Typer(no_args_is_help=True, help="Named devices: add, list, check and remove them.")
# A check in about a second: short warm-up and rounds (the defaults are 1 s each), no cooldown.
QUICK_MEASUREMENT = {"warmup_seconds": 0.1, "min_seconds": 0.1, "cooldown_seconds": 0.0}

REGISTRY_OPTION = typer.Option(None, "--devices", metavar="FILE",
                               help=f"The device registry (default: ${ENV_VAR}, else devices.toml in the user "
                                    f"config directory).")


@contextlib.contextmanager
def registry_errors() -> Iterator[None]:
    """The registry's ValueErrors are bad input: one line on stderr, exit status 2."""
    with user_errors():
        try:
            yield
        except ValueError as e:
            raise UserError(str(e)) from None


@app.command("add")
def add(name: str = typer.Argument(..., help="A new device name (letters, digits, '-' and '_')."),
        kind: str = typer.Option(..., "--kind", "-k",
                                 help="Agent kind: an installed one (onnxruntime-cpu, cuda, virtual, ...) or a "
                                      "module:Class path."),
        option: list[str] = typer.Option([], "--option", "-o", metavar="KEY=VALUE",
                                         help="An option of the kind's agent; repeat for several. A value is read as "
                                              "TOML or JSON when it is one (3, 0.5, true, [0, 1], {\"kind\": "
                                              "\"llvm\"}), else as a string."),
        measurement: list[str] = typer.Option([], "--measurement", "-m", metavar="KEY=VALUE",
                                              help="A measurement setting for this device over the run's, e.g. "
                                                   "rounds=5; repeat for several."),
        ray_resource: list[str] = typer.Option([], "--ray-resource", metavar="NAME=AMOUNT",
                                               help="A Ray custom resource the device's actor needs, so Ray places "
                                                    "it on the node that offers it."),
        replace: bool = typer.Option(False, "--replace", help="Overwrite a device of the same name."),
        devices_file: Optional[Path] = REGISTRY_OPTION):
    """Add a named device; it is validated (kind, options, settings) before it is written."""
    with registry_errors():
        spec = DeviceSpec(name, kind, parse_assignments(option, "--option"),
                          parse_assignments(ray_resource, "--ray-resource"),
                          parse_assignments(measurement, "--measurement"))
        registry = DeviceRegistry(devices_file)
        registry.add(spec, replace=replace)
        out.print(f"added {escape(name)} (kind {escape(kind)}) to {registry.path}; "
                  f"check it with: hilas devices check {escape(name)}", soft_wrap=True)


@app.command("list")
def list_devices(devices_file: Optional[Path] = REGISTRY_OPTION):
    """List the devices with their kind, target, health and last check."""
    with registry_errors():
        registry = DeviceRegistry(devices_file)
        checks = registry.last_checks()
        table = Table(caption="health: of the last `hilas devices check NAME`; reference: the reference model's "
                              "median and rounds CV at that check")
        for col in ("name", "kind", "target", "health", "last check", "reference"):
            table.add_column(col, no_wrap=col in ("name", "health"), overflow="fold")
        for spec in registry.known().values():
            table.add_row(escape(spec.name), escape(spec.kind), escape(target(spec)), *_health(checks.get(spec.name)))
        out.print(table)
        for name, record in checks.items():
            if not record["healthy"]:
                out.print(f"{escape(name)}: {escape(record['message'])}", soft_wrap=True)
        out.print(f"registry: {registry.path}", soft_wrap=True)


def target(spec: DeviceSpec) -> str:
    """Where a device runs: its [user@]host and compile target options, for kinds that have them."""
    options = spec.options
    host = f"{options['user']}@{options['host']}" if "user" in options and "host" in options else options.get("host")
    parts = [p for p in (host, options.get("target")) if p is not None]
    return " ".join(p if isinstance(p, str) else json.dumps(p) for p in parts) or "-"


def _health(record: dict | None) -> tuple[str, str, str]:
    """The health, last check and reference cells of a device's row."""
    if record is None:
        return "unchecked", "-", "-"
    when = time.strftime("%m-%d %H:%M", time.localtime(record["time"]))
    if not record["healthy"]:
        return "[red]unhealthy[/] (below)", when, "-"
    return "[green]healthy[/]", when, f"{record['median_ms']:.4g} ms, CV {record['rounds_cv']:.1%}"


@app.command("check")
def check(name: str = typer.Argument(..., help="Device name (see hilas devices list)."),
          quick: bool = typer.Option(False, "--quick",
                                     help="0.1 s of warm-up and per round instead of 1 s: a faster check, a rougher "
                                          "CV."),
          timeout: float = typer.Option(300.0, "--timeout", min=0.1,
                                        help="Seconds the whole check may take (compiling for a board can take "
                                             "minutes)."),
          devices_file: Optional[Path] = REGISTRY_OPTION):
    """Start a device, print its fingerprint, and time a small reference model on it (median and CV)."""
    with registry_errors():
        registry = DeviceRegistry(devices_file)
        spec = registry.get(name)
        protocol = MeasurementProtocol(**(QUICK_MEASUREMENT if quick else {}))
        err.print(f"checking {escape(name)} (kind {escape(spec.kind)}): starting it and timing the reference "
                  f"model...", soft_wrap=True)
        from hilas.devices.check import check_device  # starts the device: its runtime (and onnx) load only here

        try:
            result = check_device(spec, protocol, timeout)
        except (ValueError, DeviceUnavailable, MeasurementError) as e:
            registry.record_check(spec, {"healthy": False, "message": str(e)})
            err.print(f"[bold red]unhealthy:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        latency = result.latency
        registry.record_check(spec, {"healthy": True, "message": "", "fingerprint": result.fingerprint,
                                     "median_ms": latency.median_ms, "cv": latency.cv,
                                     "rounds_cv": latency.rounds_cv})
        out.print(check_table(name, result))
        out.print(f"healthy; recorded in {registry.state_path}", soft_wrap=True)


def check_table(name: str, result: DeviceCheck) -> Table:
    """What the device says it is (device.*, runtime.*), its fingerprint, and its time on the reference."""
    table = Table(title=escape(f"{name} ({result.info.get('kind', '?')})"), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in result.info.items():
        if key == "kind":
            continue
        for sub, v in (value.items() if isinstance(value, dict) else [(None, value)]):
            table.add_row(f"{key}.{sub}" if sub else key, escape(str(v)))
    latency = result.latency
    table.add_row("fingerprint", result.fingerprint)
    table.add_row("reference median", f"{latency.median_ms:.4g} ms (p10 {latency.p10_ms:.4g}, p90 "
                                      f"{latency.p90_ms:.4g}; {latency.n} samples)")
    table.add_row("reference CV", f"{latency.rounds_cv:.1%} between the {len(latency.round_medians_ms)} rounds' "
                                  f"medians (the noise check's number); {latency.cv:.1%} over all samples")
    return table


@app.command("remove")
def remove(name: str = typer.Argument(..., help="Device name."), devices_file: Optional[Path] = REGISTRY_OPTION):
    """Remove a device and its health record."""
    with registry_errors():
        registry = DeviceRegistry(devices_file)
        registry.remove(name)
        out.print(f"removed {escape(name)} from {registry.path}", soft_wrap=True)
