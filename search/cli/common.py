"""What the commands share: the consoles, one line and exit status 2 for bad input, KEY=VALUE options, and
progress bars."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hilas.search.errors import UserError
from hilas.search.progress import Progress as RunProgress

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

out = Console()
err = Console(stderr=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    try:
        yield
    except UserError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def parse_value(text: str):
    """A TOML or JSON value when the text is one (3, 0.5, true, [0, 1], {"kind": "llvm"}), else the text."""
    for parse in (_toml_value, json.loads):
        try:
            value = parse(text)
        except ValueError:
            continue
        if _plain(value):
            return value
    return text


def _toml_value(text: str):
    doc = tomllib.loads(f"v = {text}")
    if list(doc) != ["v"]:
        raise ValueError(f"not one TOML value: {text!r}")
    return doc["v"]


def _plain(value) -> bool:
    """Strings, numbers, booleans, and lists and tables of them: what the registry file holds."""
    if isinstance(value, (str, int, float)):
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def parse_assignments(items: list[str], flag: str) -> dict:
    """KEY=VALUE arguments of one flag as a dict; each value through parse_value."""
    parsed: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"{flag} {item!r}: write KEY=VALUE, e.g. {flag} rounds=5")
        if key in parsed:
            raise UserError(f"{flag} {key}=... is given twice")
        parsed[key] = parse_value(raw.strip())
    return parsed


@contextlib.contextmanager
def progress_bars() -> Iterator[RunProgress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bars:
        tasks: dict[str, int] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bars.add_task(what, total=total)
            bars.update(tasks[what], completed=done, total=max(total, done))

        yield RunProgress(on_train_epoch=lambda e, n: update("training the default model (epochs)", e, n),
                          on_evaluation=update)


@contextlib.contextmanager
def training_progress() -> Iterator[Callable[[int, int], None]]:
    """A progress bar for training the default model, shown only if it has to be trained (not cached)."""
    bars: list[Progress] = []

    def update(epoch: int, epochs: int) -> None:
        if not bars:
            bars.append(Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err))
            bars[0].start()
            bars[0].add_task("training the default model (epochs)", total=epochs)
        bars[0].update(bars[0].task_ids[0], completed=epoch)

    try:
        yield update
    finally:
        if bars:
            bars[0].stop()
