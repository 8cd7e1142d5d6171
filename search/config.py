"""The run config: a TOML file, validated on load, frozen into the run's store."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hilas.devices import MeasurementProtocol
from hilas.search.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODELS = ("digits-resnet",)
DATA_FORMATS = ("digits", "image-folder", "npz", "idx")
PROXIES = ("batchnorm", "distillation")
ALGORITHMS = ("nsga2", "random")
OBJECTIVES = ("latency", "flops")
_TABLES: dict[str, dict[str, type]] = {
    "model": {"name": str, "factory": str, "weights": str, "export": str, "input_shape": list},
    "data": {"format": str, "path": str, "labels": str, "validation_path": str, "validation_labels": str,
             "shots": int, "seed": int, "validation": int, "mean": list,
             "std": list},
    "space": {"masks": bool, "drops": bool, "binary": bool, "drop_recovery_steps": int},
    "accuracy": {"proxy": str, "distillation_steps": int},
    "search": {"budget": int, "population": int, "seed": int, "devices": list, "fresh": bool, "algorithm": str,
               "objective": str},
    "measurement": {f: type(v) for f, v in asdict(MeasurementProtocol()).items()},
}


@dataclass(frozen=True)
class RunConfig:
    """What to search, on which devices, for how long. Defaults are the demo's."""

    model: str | None = "digits-resnet"  # the embedded model, or None for the user's own:
    model_factory: str | None = None  # "package.module:function" returning an nn.Module
    model_weights: str | None = None  # its state dict file (absolute path)
    model_export: str | None = None  # or a torch.export archive (.pt2, absolute path)
    input_shape: tuple[int, ...] | None = None  # [1, C, H, W]; the user's model needs it
    data: str = "digits"  # the data format, one of DATA_FORMATS
    data_path: str | None = None  # image folder, .npz or IDX images file (absolute path)
    data_labels: str | None = None  # IDX labels file (absolute path)
    validation_path: str | None = None  # held-out images to validate on (all of them), in the same format
    validation_labels: str | None = None  # their IDX labels file
    shots: int = 10
    data_seed: int = 0
    validation: int | None = None  # validation images per class; None: all but the few-shot ones
    mean: tuple[float, ...] | None = None  # per-channel input normalisation the model expects
    std: tuple[float, ...] | None = None
    drop_recovery_steps: int = 40  # PRACTISE adapter training steps per droppable block; 0: plain drops
    proxy: str = "batchnorm"  # the accuracy proxy, one of PROXIES
    distillation_steps: int = 30  # steps of few-shot distillation per candidate when proxy = "distillation"
    masks: bool = True
    drops: bool = True
    binary: bool = False  # search the stage widths of a binary network distilled from the model (spaces.binary)
    budget: int = 480
    population: int = 32
    seed: int = 0
    devices: tuple[str, ...] = ("local-cpu",)
    fresh: bool = False  # measure every structure, reusing nothing from the latency database
    algorithm: str = "nsga2"  # or "random": the space's own samples, a baseline to compare against
    objective: str = "latency"  # or "flops": steer by FLOPs instead (devices still measure, for the fronts)
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
        lists = {k: tuple(d[k]) for k in ("input_shape", "mean", "std") if d.get(k) is not None}
        return cls(**{**d, **lists, "devices": tuple(d["devices"])})

    @property
    def user_model(self) -> bool:
        return self.model is None


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


def parse_config(doc: dict, source: str, base: Path = Path(".")) -> RunConfig:
    """A RunConfig from a parsed TOML document; every mistake becomes one UserError line. Relative paths
    are relative to `base` (the config file's folder)."""
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
        **_model_and_data(t["model"], t["data"], source, base),
        masks=t["space"].get("masks", defaults.masks and not t["space"].get("binary", False)),
        drops=t["space"].get("drops", defaults.drops and not t["space"].get("binary", False)),
        binary=t["space"].get("binary", defaults.binary),
        drop_recovery_steps=t["space"].get("drop_recovery_steps", defaults.drop_recovery_steps),
        proxy=t["accuracy"].get("proxy", defaults.proxy),
        distillation_steps=t["accuracy"].get("distillation_steps", defaults.distillation_steps),
        budget=t["search"].get("budget", defaults.budget),
        population=t["search"].get("population", defaults.population),
        seed=t["search"].get("seed", defaults.seed),
        devices=tuple(t["search"].get("devices", defaults.devices)),
        fresh=t["search"].get("fresh", defaults.fresh),
        algorithm=t["search"].get("algorithm", defaults.algorithm),
        objective=t["search"].get("objective", defaults.objective),
        device_definitions=definitions,
        measurement=t["measurement"],
    )
    validate(cfg, source)
    return cfg


def _model_and_data(model: dict, data: dict, source: str, base: Path) -> dict:
    """The [model] and [data] tables as RunConfig fields, with absolute paths."""
    given = [k for k in ("name", "factory", "export") if k in model]
    if len(given) > 1:
        raise UserError(f"{source}: [model] {' and '.join(given)} name two models; give one of them")
    if "weights" in model and "factory" not in model:
        raise UserError(f"{source}: [model] weights go with factory = \"package.module:function\"")
    for table, key, kinds in ((model, "input_shape", int), (data, "mean", (int, float)), (data, "std", (int, float))):
        values = table.get(key, [])
        if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in values):
            raise UserError(f"{source}: [{'model' if table is model else 'data'}] {key} must be a list of numbers, "
                            f"got {values!r}")

    def path(table: dict, key: str) -> str | None:
        return str((base / table[key]).resolve()) if key in table else None

    def numbers(key: str) -> tuple | None:
        return tuple(data[key]) if key in data else None

    defaults = RunConfig()
    return dict(model=None if "factory" in model or "export" in model else model.get("name", defaults.model),
                model_factory=model.get("factory"), model_weights=path(model, "weights"),
                model_export=path(model, "export"),
                input_shape=tuple(model["input_shape"]) if "input_shape" in model else None,
                data=data.get("format", defaults.data), data_path=path(data, "path"), data_labels=path(data, "labels"),
                validation_path=path(data, "validation_path"), validation_labels=path(data, "validation_labels"),
                shots=data.get("shots", defaults.shots), data_seed=data.get("seed", defaults.data_seed),
                validation=data.get("validation"), mean=numbers("mean"), std=numbers("std"))


def _validate_model_and_data(cfg: RunConfig, source: str) -> None:
    if cfg.model is not None and cfg.model not in MODELS:
        raise UserError(f"{source}: unknown model '{cfg.model}'; available: {', '.join(MODELS)} (or your own: "
                        "factory = \"package.module:function\" with weights, or export = \"model.pt2\")")
    if cfg.user_model and cfg.input_shape is None:
        raise UserError(f"{source}: [model] input_shape = [1, C, H, W] is needed for your own model")
    shape = cfg.input_shape
    if shape is not None and (len(shape) != 4 or shape[0] != 1 or min(shape) < 1):
        raise UserError(f"{source}: [model] input_shape must be [1, C, H, W] (one image, as devices measure it), "
                        f"got {list(shape)}")
    if cfg.data not in DATA_FORMATS:
        raise UserError(f"{source}: unknown [data] format '{cfg.data}'; available: {', '.join(DATA_FORMATS)}")
    if cfg.data == "digits":
        extra = [k for k, v in (("path", cfg.data_path), ("labels", cfg.data_labels),
                                ("validation", cfg.validation), ("validation_path", cfg.validation_path))
                 if v is not None]
        if extra:
            raise UserError(f"{source}: [data] {extra[0]} does not apply to the embedded digits; set format to "
                            "\"image-folder\", \"npz\" or \"idx\" for your own data")
    elif cfg.data_path is None:
        raise UserError(f"{source}: [data] format \"{cfg.data}\" needs path = \"...\"")
    if cfg.data == "idx" and cfg.data_labels is None:
        raise UserError(f"{source}: [data] format \"idx\" needs labels = \"...-labels-idx1-ubyte.gz\" beside path")
    if cfg.data not in ("idx", "digits") and cfg.data_labels is not None:
        raise UserError(f"{source}: [data] labels applies to format \"idx\" only; {cfg.data} data holds its labels")
    if cfg.data == "idx" and cfg.validation_path is not None and cfg.validation_labels is None:
        raise UserError(f"{source}: [data] validation_path in format \"idx\" needs validation_labels = \"...\"")
    if cfg.validation_path is not None and cfg.validation is not None:
        raise UserError(f"{source}: [data] validation_path validates on all its images; leave out [data] validation")
    if cfg.validation is not None and cfg.validation < 1:
        raise UserError(f"{source}: [data] validation must be at least 1 image per class, got {cfg.validation}")
    if cfg.proxy not in PROXIES:
        raise UserError(f"{source}: unknown [accuracy] proxy '{cfg.proxy}'; available: {', '.join(PROXIES)}")
    if cfg.distillation_steps < 1:
        raise UserError(f"{source}: [accuracy] distillation_steps must be at least 1, got {cfg.distillation_steps}")
    if cfg.drop_recovery_steps < 0:
        raise UserError(f"{source}: [space] drop_recovery_steps must be 0 or more, got {cfg.drop_recovery_steps}")


def validate(cfg: RunConfig, source: str) -> None:
    _validate_model_and_data(cfg, source)
    if not (cfg.masks or cfg.drops or cfg.binary):
        raise UserError(f"{source}: [space] turns off both masks and drops; enable at least one")
    if cfg.binary and (cfg.masks or cfg.drops):
        raise UserError(f"{source}: [space] binary searches the widths of a new binary network and does not "
                        f"compose with masks or drops; set masks = false and drops = false")
    if cfg.population < 4:
        raise UserError(f"{source}: [search] population must be at least 4, got {cfg.population}")
    if cfg.budget < cfg.population:
        raise UserError(f"{source}: [search] budget ({cfg.budget}) must be at least the population "
                        f"({cfg.population})")
    if cfg.shots < 1:
        raise UserError(f"{source}: [data] shots must be at least 1, got {cfg.shots}")
    if cfg.algorithm not in ALGORITHMS:
        raise UserError(f"{source}: unknown [search] algorithm '{cfg.algorithm}'; available: {', '.join(ALGORITHMS)}")
    if cfg.objective not in OBJECTIVES:
        raise UserError(f"{source}: unknown [search] objective '{cfg.objective}'; available: {', '.join(OBJECTIVES)}")
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
    return parse_config(doc, str(path), path.parent)
