"""Errors that are the user's to fix: the CLI prints them as one line and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, path, device name...). The message says what is wrong and what to do."""
