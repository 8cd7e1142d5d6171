"""Writing benchmark results: atomically, and into their generated section of benchmarks/README.md."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"


def write_atomically(path: Path, text: str) -> None:
    """Write a *.tmp beside `path`, then rename it: a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def update_readme(section_name: str, section: str) -> None:
    """Replace the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in benchmarks/README.md."""
    begin, end = f"<!-- {section_name}:begin -->", f"<!-- {section_name}:end -->"
    text = README.read_text(encoding="utf-8")
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(f"{README} must hold one {begin} ... {end} section; the results are in {RESULTS}")
    head, rest = text.split(begin)
    tail = rest.split(end)[1]
    write_atomically(README, f"{head}{begin}\n{section}{end}{tail}")
