"""From a device's name and kind to a running agent, and the registry of named devices.

Kinds are found through the entry-point group `hilas.devices` (so an installed
package can add hardware) or given directly as a "module:Class" path.

The registry is a TOML file with one table per device, in the shape of a run
config's [device.NAME] tables so a definition can be copied between the two:

    [rpi4]
    kind = "ssh-tvm"
    host = "rpi4.local"
    target = {kind = "llvm", mtriple = "aarch64-linux-gnu", mcpu = "cortex-a72"}
    [rpi4.measurement]
    cooldown_seconds = 2.0

Each device's last check (`hilas devices check`) lives in a JSON file beside it,
so the user's file holds only what the user chose.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from .agent import DeviceAgent
from .protocol import MeasurementProtocol

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENTRY_POINT_GROUP = "hilas.devices"
ENV_VAR = "HILAS_DEVICES"
# Keys of a device's table that are not options for its agent.
SPEC_TABLES = ("measurement", "ray_resources")


@dataclass(frozen=True)
class DeviceSpec:
    """A named device instance: which agent kind, its options, and where Ray may place it.

    ray_resources are Ray custom resources the agent's actor requires, e.g.
    {"board-rpi4": 1} to run it on the node started with that resource.
    measurement holds this device's own measurement settings, over the run's
    (e.g. {"rounds": 5, "cooldown_seconds": 2.0} for a board that heats up).
    """

    name: str
    kind: str
    options: dict = field(default_factory=dict)
    ray_resources: dict = field(default_factory=dict)
    measurement: dict = field(default_factory=dict)


LOCAL_CPU = DeviceSpec("local-cpu", "onnxruntime-cpu")


def known_kinds() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def agent_class(kind: str) -> type:
    """The agent class for a registered kind name or a "module:Class" path."""
    if ":" in kind:
        module_name, _, class_name = kind.partition(":")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as e:
            hint = "; install it, or add its directory to PYTHONPATH" if isinstance(e, ModuleNotFoundError) else ""
            raise ValueError(
                f"device kind {kind!r}: cannot load {class_name!r} from module {module_name!r}: {e}{hint}"
            ) from e
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=kind):
        return ep.load()
    raise ValueError(
        f"unknown device kind {kind!r}; known kinds: {', '.join(known_kinds()) or 'none'} "
        f"(or give a 'module:Class' path)"
    )


def make_agent(spec: DeviceSpec) -> DeviceAgent:
    """Build (not prepare) the agent for a device; bad options are reported against the device's name."""
    cls = agent_class(spec.kind)
    try:
        inspect.signature(cls).bind(**spec.options)
    except TypeError as e:
        accepted = ", ".join(inspect.signature(cls).parameters) or "none"
        raise ValueError(
            f"device {spec.name!r} (kind {spec.kind!r}): bad options {spec.options}: {e}; accepted options: {accepted}"
        ) from e
    try:
        return cls(**spec.options)
    except (TypeError, ValueError) as e:
        raise ValueError(f"device {spec.name!r} (kind {spec.kind!r}): bad option value: {e}") from e


def spec_from_table(name: str, table: dict) -> DeviceSpec:
    """A device from its TOML table: a run config's [device.NAME] or a registry's [NAME]."""
    options = {k: v for k, v in table.items() if k not in ("kind", *SPEC_TABLES)}
    return DeviceSpec(name, table["kind"], options, dict(table.get("ray_resources", {})),
                      dict(table.get("measurement", {})))


def spec_to_table(spec: DeviceSpec) -> dict:
    """The TOML table of a device (the inverse of spec_from_table); empty sub-tables are left out."""
    table = {"kind": spec.kind, **spec.options}
    for key in SPEC_TABLES:
        if getattr(spec, key):
            table[key] = dict(getattr(spec, key))
    return table


def default_registry_path() -> Path:
    """$HILAS_DEVICES, else devices.toml in the user config directory."""
    from platformdirs import user_config_dir

    return Path(os.environ.get(ENV_VAR) or Path(user_config_dir("hilas")) / "devices.toml")


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_SECRET = re.compile(r"password|passphrase|passwd", re.IGNORECASE)


class DeviceRegistry:
    """Named devices in a TOML file, with each device's last check in a JSON file beside it.

    Both files are read afresh on every call and written whole through a temporary file and an
    atomic rename, so a crash never leaves half a file. local-cpu is built in, never in the file.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else default_registry_path()

    @property
    def state_path(self) -> Path:
        """The JSON file of health records: devices.toml -> devices.state.json."""
        return self.path.with_name(f"{self.path.stem}.state.json")

    def devices(self) -> dict[str, DeviceSpec]:
        """The file's devices in file order (local-cpu is not among them); {} when there is no file."""
        if not self.path.exists():
            return {}
        try:
            doc = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"device registry {self.path}: cannot read it: {e}; fix or remove the file") from None
        for name, table in doc.items():
            self._check_table(name, table)
        return {name: spec_from_table(name, table) for name, table in doc.items()}

    def known(self) -> dict[str, DeviceSpec]:
        """local-cpu and the file's devices."""
        return {LOCAL_CPU.name: LOCAL_CPU, **self.devices()}

    def get(self, name: str) -> DeviceSpec:
        known = self.known()
        if name not in known:
            raise self._unknown(name, known)
        return known[name]

    def add(self, spec: DeviceSpec, replace: bool = False) -> None:
        """Validate the device (see validate_spec), then write it; an existing name needs replace=True."""
        validate_spec(spec)
        devices = self.devices()
        if spec.name in devices and not replace:
            raise ValueError(f"device {spec.name!r} already exists in {self.path}; choose another name, "
                             f"remove it first, or replace it (--replace)")
        devices[spec.name] = spec
        _write_atomic(self.path, _render(devices))

    def remove(self, name: str) -> None:
        """Remove a device and its health record."""
        if name == LOCAL_CPU.name:
            raise ValueError(f"{name} is built in and cannot be removed")
        devices = self.devices()
        if name not in devices:
            raise self._unknown(name, self.known())
        del devices[name]
        _write_atomic(self.path, _render(devices))
        state = self._state()
        if state.pop(name, None) is not None:
            _write_atomic(self.state_path, json.dumps(state, indent=2) + "\n")

    def last_checks(self) -> dict[str, dict]:
        """Each device's last check, by name; a device redefined since its check has none."""
        known = self.known()
        return {name: record for name, record in self._state().items()
                if name in known and record.get("definition") == spec_to_table(known[name])}

    def record_check(self, spec: DeviceSpec, record: dict) -> None:
        """Keep a check's outcome with the time and the definition it checked."""
        state = self._state()
        state[spec.name] = {**record, "time": time.time(), "definition": spec_to_table(spec)}
        _write_atomic(self.state_path, json.dumps(state, indent=2) + "\n")

    def _state(self) -> dict[str, dict]:
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise ValueError(f"device health file {self.state_path}: cannot read it: {e}; remove it "
                             f"(it only holds the last checks)") from None

    def _unknown(self, name: str, known: dict) -> ValueError:
        return ValueError(f"no device {name!r} in {self.path}; known devices: {', '.join(known)} "
                          f"(add one with `hilas devices add {name} --kind KIND`)")

    def _check_table(self, name: str, table) -> None:
        where = f"device registry {self.path}: [{name}]"
        if not isinstance(table, dict) or not isinstance(table.get("kind"), str):
            raise ValueError(f'{where} needs kind = "..." (e.g. "virtual"); fix or remove it')
        for key in SPEC_TABLES:
            if not isinstance(table.get(key, {}), dict):
                raise ValueError(f"{where}: {key} must be a table, e.g. [{name}.{key}]")
        if name == LOCAL_CPU.name:
            raise ValueError(f"{where}: the name {name} is built in; rename the table")
        try:
            MeasurementProtocol().updated(table.get("measurement", {}))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}.measurement: {e}") from None


def validate_spec(spec: DeviceSpec) -> None:
    """Raise ValueError unless the device can be kept: a usable name, a kind that loads, options
    its agent class takes (and no secrets), good measurement settings and Ray resources.
    """
    if spec.name == LOCAL_CPU.name:
        raise ValueError(f"the name {spec.name} is built in (onnxruntime-cpu on this machine); choose another")
    if not _NAME.fullmatch(spec.name):
        raise ValueError(f"device name {spec.name!r}: use letters, digits, '-' and '_' (starting with a letter "
                         f"or digit)")
    for key in spec.options:
        if _SECRET.search(key) and not key.lower().endswith("_env"):  # password_env names a variable: fine
            raise ValueError(f"device {spec.name!r}: option {key!r} looks like a secret, and hilas never writes "
                             f"secrets to the registry; use an SSH key, the ssh-agent, or an environment variable "
                             f"(named by an option such as password_env, where the kind has one)")
    make_agent(spec)
    try:
        MeasurementProtocol().updated(spec.measurement)
    except (TypeError, ValueError) as e:
        raise ValueError(f"device {spec.name!r}: bad measurement settings: {e}") from None
    for resource, amount in spec.ray_resources.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount > 0:
            raise ValueError(f"device {spec.name!r}: Ray resource {resource!r} needs an amount > 0, got {amount!r}")


_HEADER = """\
# hilas device registry: one [NAME] table per device, as in a run config's [device.NAME].
# Written by `hilas devices add|remove`, which rewrite the whole file (comments are not kept).
"""


def _render(devices: dict[str, DeviceSpec]) -> str:
    """The registry file: each device's options, then its measurement and ray_resources sub-tables."""
    parts = [_HEADER]
    for name, spec in devices.items():
        table = spec_to_table(spec)
        lines = [f"[{_key(name)}]"]
        lines += [f"{_key(k)} = {_value(v, f'{name}.{k}')}" for k, v in table.items() if k not in SPEC_TABLES]
        for sub in SPEC_TABLES:
            if sub in table:
                lines.append(f"[{_key(name)}.{sub}]")
                lines += [f"{_key(k)} = {_value(v, f'{name}.{sub}.{k}')}" for k, v in table[sub].items()]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key) -> str:
    if not isinstance(key, str):
        raise ValueError(f"TOML keys are strings, got {key!r}")
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    # A JSON string is a TOML basic string, except that TOML also wants DEL escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value, where: str) -> str:
    """One TOML value: strings, booleans, integers, floats, and lists and inline tables of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("-inf" if value < 0 else "inf")
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v, where)}" for k, v in value.items()) + "}"
    raise ValueError(f"{where}: a TOML file cannot hold {value!r} ({type(value).__name__}); use a string, "
                     f"a number, true or false, a list or a table")


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file in the same directory and rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
