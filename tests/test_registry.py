"""The device registry file: round trips, validation before writing, atomic writes, health records, run configs."""

import os
import sys
from pathlib import Path

import pytest
from platformdirs import user_config_dir

from hilas.devices import LOCAL_CPU, DeviceRegistry, DeviceSpec, spec_to_table
from hilas.search.config import RunConfig
from hilas.search.errors import UserError
from hilas.search.runs import resolve_devices, with_definitions

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

BOARD = "tests.test_registry:FakeBoard"


class FakeBoard:
    """A kind with the option types a real board has (host, a TVM target table, numbers, lists)."""

    def __init__(self, *, host: str, target: dict | None = None, port: int = 22, user: str | None = None,
                 password_env: str | None = None, scale: float = 1.0, cores: list[int] | None = None,
                 emulated: bool = False) -> None:
        if port <= 0:
            raise ValueError(f"port must be > 0, got {port}")


def board(name="rpi4", **options) -> DeviceSpec:
    return DeviceSpec(name, BOARD, {"host": "rpi4.local", **options})


def test_devices_round_trip_through_the_toml_file(device_registry):
    odd = DeviceSpec("rpi4", BOARD,
                     {"host": 'a "quoted" \\ host\nwith ünïcode\x7f', "port": 2222, "scale": 1e-5, "emulated": True,
                      "cores": [0, 1], "target": {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}},
                     ray_resources={"board-rpi4": 1}, measurement={"rounds": 5, "cooldown_seconds": 2.0})
    registry = DeviceRegistry()
    assert registry.path == device_registry
    registry.add(odd)
    registry.add(DeviceSpec("sim", "virtual", {"noise_cv": 0.01}))
    assert registry.devices() == {"rpi4": odd, "sim": DeviceSpec("sim", "virtual", {"noise_cv": 0.01})}
    # the shape of a run config's [device.NAME] tables, so definitions can be copied between them
    assert tomllib.loads(device_registry.read_text())["rpi4"] == spec_to_table(odd)
    assert registry.known()["local-cpu"] == LOCAL_CPU


def test_the_path_is_the_argument_else_the_environment_else_the_user_config_dir(tmp_path, monkeypatch):
    assert DeviceRegistry(tmp_path / "mine.toml").path == tmp_path / "mine.toml"
    assert DeviceRegistry().path == tmp_path / "devices.toml"  # HILAS_DEVICES, set by conftest
    monkeypatch.delenv("HILAS_DEVICES")
    assert DeviceRegistry().path == Path(user_config_dir("hilas")) / "devices.toml"
    assert DeviceRegistry(tmp_path / "boards.toml").state_path == tmp_path / "boards.state.json"


def test_no_file_is_an_empty_registry_with_local_cpu(device_registry):
    assert DeviceRegistry().devices() == {}
    assert list(DeviceRegistry().known()) == ["local-cpu"]
    assert not device_registry.exists()


@pytest.mark.parametrize("spec, message", [
    (DeviceSpec("local-cpu", "virtual"), "built in"),
    (DeviceSpec("my board", "virtual"), "letters, digits"),
    (board(password="hunter2"), "'password' looks like a secret.*ssh-agent"),
    (board(key_passphrase="x"), "'key_passphrase' looks like a secret"),
    (DeviceSpec("x", "tpu"), "unknown device kind 'tpu'.*virtual"),
    (DeviceSpec("x", "tests.test_registry:Missing"), "cannot load 'Missing'"),
    (board(colour="red"), "'rpi4'.*colour.*accepted options: host, target"),
    (board(port=0), "'rpi4'.*port must be > 0"),
    (DeviceSpec("x", "virtual", {}, measurement={"roundz": 5}), "'x': bad measurement settings.*roundz"),
    (DeviceSpec("x", "virtual", {}, measurement={"rounds": 0}), "rounds must be > 0"),
    (DeviceSpec("x", "virtual", {}, ray_resources={"board": 0}), "Ray resource 'board' needs an amount > 0"),
    (DeviceSpec("x", "virtual", {"seed": None}), "x.seed: a TOML file cannot hold None"),
])
def test_bad_devices_are_refused_before_anything_is_written(device_registry, spec, message):
    with pytest.raises(ValueError, match=message):
        DeviceRegistry().add(spec)
    assert not device_registry.exists()


def test_an_option_naming_the_variable_that_holds_a_password_is_kept():
    DeviceRegistry().add(board(password_env="RPI4_PASSWORD"))
    assert DeviceRegistry().devices()["rpi4"].options["password_env"] == "RPI4_PASSWORD"


def test_a_name_is_added_once_unless_replaced():
    registry = DeviceRegistry()
    registry.add(board(port=22))
    with pytest.raises(ValueError, match="'rpi4' already exists.*--replace"):
        registry.add(board(port=2222))
    registry.add(board(port=2222), replace=True)
    assert registry.devices()["rpi4"].options["port"] == 2222


def test_a_failed_write_leaves_the_old_file_whole(device_registry, monkeypatch):
    registry = DeviceRegistry()
    registry.add(board())
    before = device_registry.read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        registry.add(board("rpi5"))
    assert device_registry.read_text() == before
    assert sorted(p.name for p in device_registry.parent.iterdir()) == ["devices.toml"]  # no temporary left


def test_remove_forgets_the_device_and_its_health():
    registry = DeviceRegistry()
    registry.add(board())
    registry.add(board("rpi5"))
    registry.record_check(board(), {"healthy": True})
    registry.remove("rpi4")
    assert list(registry.devices()) == ["rpi5"]
    assert registry.last_checks() == {} and "rpi4" not in registry.state_path.read_text()
    with pytest.raises(ValueError, match="no device 'rpi4'.*known devices: local-cpu, rpi5.*hilas devices add"):
        registry.remove("rpi4")
    with pytest.raises(ValueError, match="built in"):
        registry.remove("local-cpu")


def test_a_check_no_longer_counts_once_the_device_is_redefined():
    registry = DeviceRegistry()
    registry.add(board(port=22))
    registry.record_check(board(port=22), {"healthy": False, "message": "unreachable"})
    assert registry.last_checks()["rpi4"]["message"] == "unreachable"
    registry.add(board(port=2222), replace=True)
    assert registry.last_checks() == {}


@pytest.mark.parametrize("text, message", [
    ("[rpi4\n", "cannot read it.*fix or remove the file"),
    ("[rpi4]\nhost = 'x'\n", r"\[rpi4\] needs kind"),
    ("[local-cpu]\nkind = 'virtual'\n", "built in; rename"),
    ("[sim]\nkind = 'virtual'\nmeasurement = 3\n", "measurement must be a table"),
    ("[sim]\nkind = 'virtual'\n[sim.measurement]\nroundz = 3\n", r"\[sim\].measurement: unknown"),
])
def test_a_hand_edited_file_with_mistakes_says_where(device_registry, text, message):
    device_registry.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        DeviceRegistry().devices()
    assert str(device_registry) in str(e.value)


def test_a_corrupt_health_file_says_it_can_be_removed():
    registry = DeviceRegistry()
    registry.state_path.write_text("{")
    with pytest.raises(ValueError, match="devices.state.json.*remove it"):
        registry.last_checks()


def test_a_run_config_names_registry_devices():
    DeviceRegistry().add(DeviceSpec("sim", "virtual", {"seed": 1}, measurement={"rounds": 5}))
    cfg = RunConfig(devices=("local-cpu", "sim", "mine"), device_definitions={"mine": {"kind": "virtual"}})
    specs = resolve_devices(cfg)
    assert specs == [LOCAL_CPU, DeviceSpec("sim", "virtual", {"seed": 1}, measurement={"rounds": 5}),
                     DeviceSpec("mine", "virtual")]


def test_the_run_config_s_own_definition_wins_over_the_registry():
    DeviceRegistry().add(DeviceSpec("sim", "virtual", {"seed": 1}))
    cfg = RunConfig(devices=("sim",), device_definitions={"sim": {"kind": "virtual", "seed": 2}})
    assert resolve_devices(cfg)[0].options == {"seed": 2}


def test_a_stored_run_config_resolves_without_the_registry():
    DeviceRegistry().add(DeviceSpec("sim", "virtual", {"seed": 1}, ray_resources={"node-a": 1}))
    cfg = RunConfig(devices=("local-cpu", "sim"))
    specs = resolve_devices(cfg)
    stored = RunConfig.from_dict(with_definitions(cfg, specs).to_dict())
    assert set(stored.device_definitions) == {"sim"}
    DeviceRegistry().remove("sim")
    assert resolve_devices(stored) == specs


def test_an_unknown_device_lists_every_known_name():
    DeviceRegistry().add(DeviceSpec("sim", "virtual"))
    cfg = RunConfig(devices=("gpu9",), device_definitions={"mine": {"kind": "virtual"}})
    with pytest.raises(UserError, match=r"unknown device 'gpu9'; known devices: local-cpu, mine, sim "
                                        r"\(add it with `hilas devices add gpu9 --kind KIND`, or define "
                                        r"\[device.gpu9\]"):
        resolve_devices(cfg)


def test_the_registry_is_read_only_when_a_run_needs_it(device_registry):
    device_registry.write_text("[broken\n")
    assert resolve_devices(RunConfig()) == [LOCAL_CPU]
    with pytest.raises(UserError, match="cannot read it"):
        resolve_devices(RunConfig(devices=("sim",)))
