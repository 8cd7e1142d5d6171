"""`hilas devices add|list|check|remove`, through the command line as a user types it."""

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from hilas.devices import DeviceRegistry, DeviceSpec, DeviceUnavailable
from hilas.search.cli import devices as devices_cli
from hilas.search.cli.common import parse_value
from hilas.search.cli.main import app


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch):
    """Tables as on a wide terminal, so no cell is cut short."""
    monkeypatch.setattr(devices_cli, "out", Console(width=250))


def hilas(*args: str):
    return CliRunner().invoke(app, ["devices", *args])


class UnreachableBoard:
    """A kind whose device cannot be reached: prepare() fails the way a real board's does."""

    def __init__(self, host: str = "rpi4.local") -> None:
        self.host = host

    def info(self) -> dict:
        return {"kind": "unreachable", "device": {"host": self.host}, "runtime": {}}

    def prepare(self) -> None:
        raise DeviceUnavailable(f"cannot connect to {self.host}:22 (connection refused); is the board on?")

    def measure(self, artifact, protocol):
        raise AssertionError("never measured: prepare() failed")

    def close(self) -> None:
        pass


def test_add_list_check_remove_a_virtual_device(device_registry):
    added = hilas("add", "sim", "--kind", "virtual", "-o", "noise_cv=0.01", "-o", "seed=3", "-m", "rounds=5")
    assert added.exit_code == 0, added.output
    assert "added sim" in added.stdout and "hilas devices check sim" in added.stdout
    assert DeviceRegistry().devices()["sim"] == DeviceSpec("sim", "virtual", {"noise_cv": 0.01, "seed": 3},
                                                           measurement={"rounds": 5})

    listed = hilas("list")
    assert listed.exit_code == 0
    rows = {line.split()[1]: line for line in listed.stdout.splitlines() if line.startswith("│")}
    assert "onnxruntime-cpu" in rows["local-cpu"] and "unchecked" in rows["local-cpu"]
    assert "virtual" in rows["sim"] and "unchecked" in rows["sim"]

    checked = hilas("check", "sim", "--quick")
    assert checked.exit_code == 0, checked.output
    record = DeviceRegistry().last_checks()["sim"]
    assert record["healthy"] and record["median_ms"] > 0 and record["rounds_cv"] >= 0
    for shown in ("device.noise_cv", "runtime.version", f"fingerprint         │ {record['fingerprint']}",
                  "reference median", f"{record['median_ms']:.4g} ms", "reference CV", "5 rounds' medians",
                  "healthy; recorded in"):
        assert shown in checked.stdout, shown
    assert "healthy" in hilas("list").stdout.split("sim")[1].splitlines()[0]

    removed = hilas("remove", "sim")
    assert removed.exit_code == 0 and "removed sim" in removed.stdout
    assert DeviceRegistry().devices() == {} and DeviceRegistry().last_checks() == {}
    assert "sim" not in hilas("list").stdout


def test_a_new_kind_in_ten_lines_is_added_and_checked():
    """tests/example_kind.py, the README's example, works through the command line."""
    added = hilas("add", "cpu1", "--kind", "tests.example_kind:ThreadedCpu", "-o", "threads=1",
                  "-m", "noise_threshold=1.0")  # a busy test machine's short rounds are not the point here
    assert added.exit_code == 0, added.output
    checked = hilas("check", "cpu1", "--quick")
    assert checked.exit_code == 0, checked.output
    assert "runtime.threads" in checked.stdout and "device.cpu_model" in checked.stdout
    assert DeviceRegistry().last_checks()["cpu1"]["healthy"]


def test_a_device_that_cannot_be_reached_is_one_line_exit_1_and_recorded_unhealthy():
    assert hilas("add", "rpi4", "--kind", "tests.test_devices_cli:UnreachableBoard").exit_code == 0
    checked = hilas("check", "rpi4")
    assert checked.exit_code == 1
    assert checked.stderr.strip().splitlines()[-1] == (
        "unhealthy: cannot connect to rpi4.local:22 (connection refused); is the board on?")
    record = DeviceRegistry().last_checks()["rpi4"]
    assert not record["healthy"] and "connection refused" in record["message"]
    listed = hilas("list").stdout
    assert "unhealthy" in listed and "rpi4: cannot connect to rpi4.local:22" in listed


def test_a_device_that_hangs_fails_after_the_timeout():
    assert hilas("add", "slow", "--kind", "virtual", "-o", "delay_s=30").exit_code == 0
    checked = hilas("check", "slow", "--timeout", "0.2")
    assert checked.exit_code == 1
    assert "did not finish measuring the reference model within 0.2 s" in checked.stderr
    assert "--timeout" in checked.stderr


@pytest.mark.parametrize("args, message", [
    (["add", "rpi4", "--kind", "virtual", "-o", "password=hunter2"], "'password' looks like a secret"),
    (["add", "local-cpu", "--kind", "virtual"], "built in"),
    (["add", "x", "--kind", "virtual", "-o", "seed"], "--option 'seed': write KEY=VALUE"),
    (["add", "x", "--kind", "virtual", "-o", "seed=1", "-o", "seed=2"], "--option seed=... is given twice"),
    (["add", "x", "--kind", "virtual", "-o", "sead=1"], "accepted options: ms_per_mflop"),
    (["add", "x", "--kind", "tpu"], "unknown device kind 'tpu'"),
    (["check", "nope"], "no device 'nope'"),
    (["remove", "nope"], "known devices: local-cpu"),
    (["remove", "local-cpu"], "built in"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(device_registry, args, message):
    result = hilas(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert not device_registry.exists()


def test_the_devices_option_names_another_registry(tmp_path, device_registry):
    other = tmp_path / "lab" / "boards.toml"
    assert hilas("add", "sim", "--kind", "virtual", "--devices", str(other)).exit_code == 0
    assert "sim" in DeviceRegistry(other).devices() and not device_registry.exists()
    assert f"registry: {other}" in hilas("list", "--devices", str(other)).stdout


def test_target_options_are_shown():
    DeviceRegistry().add(DeviceSpec("rpi4", "tests.test_registry:FakeBoard",
                                    {"host": "rpi4.local", "user": "pi", "target": {"kind": "llvm"}}))
    DeviceRegistry().add(DeviceSpec("sim", "virtual"))
    rows = {line.split()[1]: line for line in hilas("list").stdout.splitlines() if line.startswith("│")}
    assert 'pi@rpi4.local {"kind": "llvm"}' in rows["rpi4"]
    assert rows["sim"].split("│")[3].strip() == "-"


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0.5", 0.5), ("true", True), ("[0, 1]", [0, 1]), ("rpi4.local", "rpi4.local"),
    ('{"kind": "llvm", "mtriple": "aarch64-linux-gnu"}', {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}),
    ('{kind = "llvm"}', {"kind": "llvm"}), ('"007"', "007"), ("192.168.1.10", "192.168.1.10"), ("", ""),
    ("2024-01-01", "2024-01-01"), ("null", "null"), ("1\nx = 2", "1\nx = 2"),
])
def test_option_values_are_toml_or_json_else_strings(text, value):
    assert parse_value(text) == value
    assert json.dumps(parse_value(text)) == json.dumps(value)  # same type too (3 is not 3.0 or True)
