"""Errors that are the user's to fix: the CLI prints them as one line and exits with status 2."""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape


class UserError(Exception):
    """Bad input (config, path, device name...). The message says what is wrong and what to do."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    try:
        yield
    except UserError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
