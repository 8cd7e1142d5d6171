"""Bad input at the command line: one line on stderr, exit status 2, no traceback, nothing created."""

import pytest
from typer.testing import CliRunner

from hilas.search.cli.main import app


@pytest.mark.parametrize("args, message", [
    (["search", "run", "missing.toml"], "config file not found"),
    (["search", "resume", "."], "is not a hilas run"),
    (["front", "show", "no-such-run"], "run directory not found"),
    (["demo", "--budget", "2"], "[search] budget (2) must be at least the population"),
])
def test_bad_input(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_unknown_device_in_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text('[search]\ndevices = ["gpu9"]\n')
    result = CliRunner().invoke(app, ["search", "run", "run.toml", "--out", "out"])
    assert result.exit_code == 2
    assert "unknown device 'gpu9'" in result.stderr and "[device.gpu9]" in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_option_exits_2():
    assert CliRunner().invoke(app, ["demo", "--bogus"]).exit_code == 2
