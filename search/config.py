"""The run config: a TOML file, validated on load, frozen into the run's store."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devices import MeasurementProtocol

from .errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODELS = ("digits-resnet",)
DATASETS = ("digits",)
_TABLES = {
    "model": {"name": str},
    "data": {"name": str, "shots": int, "seed": int},
    "space": {"masks": bool, "drops": bool},
    "search": {"budget": int, "population": int, "seed": int, "devices": list, "fresh": bool},
    "measurement": {f: type(v) for f, v in asdict(MeasurementProtocol()).items()},
}


@dataclass(frozen=True)
class RunConfig:
    """What to search, on which devices, for how long. Defaults are the demo's."""

    model: str = "digits-resnet"
    data: str = "digits"
    shots: int = 10
    data_seed: int = 0
    masks: bool = True
    drops: bool = True
    budget: int = 480
    population: int = 32
    seed: int = 0
    devices: tuple[str, ...] = ("local-cpu",)
    fresh: bool = False  # measure every structure, reusing nothing from the latency database
    device_definitions: dict[str, dict] = field(default_factory=dict)
    measurement: dict = field(default_factory=dict)

    def protocol(self) -> MeasurementProtocol:
        return MeasurementProtocol(**self.measurement)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["devices"] = list(self.devices)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        return cls(**{**d, "devices": tuple(d["devices"])})


def _check_table(name: str, table, source: str) -> dict:
    if not isinstance(table, dict):
        raise UserError(f"{source}: [{name}] must be a table")
    allowed = _TABLES[name]
    for key, value in table.items():
        if key not in allowed:
            raise UserError(f"{source}: unknown key '{key}' in [{name}]; known keys: {', '.join(allowed)}")
        want = allowed[key]
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise UserError(f"{source}: [{name}] {key} must be a {want.__name__}, got {value!r}")
    return table


def parse_config(doc: dict, source: str) -> RunConfig:
    """A RunConfig from a parsed TOML document; every mistake becomes one UserError line."""
    unknown = set(doc) - set(_TABLES) - {"device"}
    if unknown:
        raise UserError(f"{source}: unknown table [{sorted(unknown)[0]}]; known tables: "
                        f"{', '.join([*_TABLES, 'device'])}")
    t = {name: _check_table(name, doc.get(name, {}), source) for name in _TABLES}
    definitions = doc.get("device", {})
    if not isinstance(definitions, dict) or not all(isinstance(v, dict) for v in definitions.values()):
        raise UserError(f"{source}: [device.NAME] tables must each hold a device definition (kind = ...)")
    for name, spec in definitions.items():
        if not isinstance(spec.get("kind"), str):
            raise UserError(f"{source}: [device.{name}] needs kind = \"...\" (e.g. \"virtual\", \"onnxruntime-cpu\")")
        for table in ("measurement", "ray_resources"):
            if not isinstance(spec.get(table, {}), dict):
                raise UserError(f"{source}: [device.{name}] {table} must be a table, e.g. [device.{name}.{table}]")
    defaults = RunConfig()
    cfg = RunConfig(
        model=t["model"].get("name", defaults.model),
        data=t["data"].get("name", defaults.data),
        shots=t["data"].get("shots", defaults.shots),
        data_seed=t["data"].get("seed", defaults.data_seed),
        masks=t["space"].get("masks", defaults.masks),
        drops=t["space"].get("drops", defaults.drops),
        budget=t["search"].get("budget", defaults.budget),
        population=t["search"].get("population", defaults.population),
        seed=t["search"].get("seed", defaults.seed),
        devices=tuple(t["search"].get("devices", defaults.devices)),
        fresh=t["search"].get("fresh", defaults.fresh),
        device_definitions=definitions,
        measurement=t["measurement"],
    )
    validate(cfg, source)
    return cfg


def validate(cfg: RunConfig, source: str) -> None:
    if cfg.model not in MODELS:
        raise UserError(f"{source}: unknown model '{cfg.model}'; available: {', '.join(MODELS)}")
    if cfg.data not in DATASETS:
        raise UserError(f"{source}: unknown data '{cfg.data}'; available: {', '.join(DATASETS)}")
    if not (cfg.masks or cfg.drops):
        raise UserError(f"{source}: [space] turns off both masks and drops; enable at least one")
    if cfg.population < 4:
        raise UserError(f"{source}: [search] population must be at least 4, got {cfg.population}")
    if cfg.budget < cfg.population:
        raise UserError(f"{source}: [search] budget ({cfg.budget}) must be at least the population "
                        f"({cfg.population})")
    if cfg.shots < 1:
        raise UserError(f"{source}: [data] shots must be at least 1, got {cfg.shots}")
    if not cfg.devices or not all(isinstance(d, str) for d in cfg.devices):
        raise UserError(f"{source}: [search] devices must be a non-empty list of device names")
    if len(set(cfg.devices)) != len(cfg.devices):
        raise UserError(f"{source}: [search] devices lists a device twice")
    try:
        protocol = cfg.protocol()
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: [measurement] {e}") from None
    for name, spec in cfg.device_definitions.items():
        try:
            protocol.updated(spec.get("measurement", {}))
        except (TypeError, ValueError) as e:
            raise UserError(f"{source}: [device.{name}.measurement] {e}") from None


def load_config(path: Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    return parse_config(doc, str(path))
