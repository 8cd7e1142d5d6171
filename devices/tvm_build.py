"""Host side of the TVM path: ONNX -> Relax -> a shared library for the device's target.

Compiling costs the same for every candidate with one structure, so libraries are cached on disk
by (structure_key, input shapes, target, cross compiler, TVM version): a structure measured again, by
this search or a later one, is compiled once. Libraries are built with TVM's default CPU pipeline,
untuned: tuning each structure with MetaSchedule would cost minutes per candidate, so the latency
measured is that of TVM's default schedules on the device, and is labelled so in the runtime info.
The exception is binary convolutions (ai.hilas.BinaryConv2d), which devices.tvm_binary lowers to
bitserial kernels with a schedule of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from . import tvm_binary
from .agent import DeviceUnavailable, MeasurementError
from .artifact import ModelArtifact

CACHE_ENV_VAR = "HILAS_CACHE_DIR"
PIPELINE = "relax default CPU pipeline, untuned"


def parse_target(target: object) -> dict:
    """A TVM target as the JSON dict TVM 0.27 takes; the old string form gets a message saying what to write."""
    if isinstance(target, str):
        text = target.strip()
        if text.startswith("{"):
            try:
                target = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"target {target!r} is not valid JSON: {e}") from None
        else:
            raise ValueError(
                f"target {target!r} is in the old string form, which TVM 0.27 refuses; give a JSON dict, e.g. "
                '{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"]}'
            )
    if not isinstance(target, dict) or not isinstance(target.get("kind"), str):
        raise ValueError(f"target must be a dict with a \"kind\" (e.g. {{\"kind\": \"llvm\", ...}}), got {target!r}")
    return dict(target)


def check_target(target: dict) -> None:
    """Let TVM itself validate the target now, not at the first candidate's compile."""
    import tvm

    try:
        tvm.target.Target(target)
    except Exception as e:  # TVM raises its own error types; any of them means the target is unusable
        raise ValueError(f"TVM refuses target {json.dumps(target)}: {_first_line(e)}") from None


def check_cross_compiler(cross_compiler: str | None) -> None:
    if cross_compiler and shutil.which(cross_compiler) is None:
        raise DeviceUnavailable(
            f"cross compiler {cross_compiler!r} is not on PATH; install it (for aarch64 boards on Debian/Ubuntu: "
            f"apt-get install g++-aarch64-linux-gnu) or set the device's cross_compiler option to its full path"
        )


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get(CACHE_ENV_VAR) or user_cache_dir("hilas")) / "tvm"


def library_key(artifact: ModelArtifact, target: dict, cross_compiler: str | None) -> str:
    import tvm

    inputs = [(s.name, list(s.shape), s.dtype) for s in artifact.inputs]
    pipeline = [PIPELINE, tvm_binary.KERNEL] if artifact.custom_ops else PIPELINE
    what = json.dumps([artifact.structure_key, inputs, target, cross_compiler or "", tvm.__version__, pipeline],
                      sort_keys=True)
    return hashlib.sha256(what.encode()).hexdigest()[:24]


def compile_library(artifact: ModelArtifact, target: dict, cross_compiler: str | None,
                    directory: Path | None = None) -> Path:
    """The artifact compiled for `target` as a shared library, from the cache when it is there.

    Raises MeasurementError("compile") when TVM cannot import or build the model.
    """
    directory = directory or cache_dir()
    path = directory / f"{library_key(artifact, target, cross_compiler)}.so"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    executable = _build(artifact, target)
    # Written beside its final name and renamed, so a crash never leaves a truncated library in the cache.
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".so.part")
    os.close(fd)
    try:
        try:
            if cross_compiler:
                executable.export_library(tmp, cc=cross_compiler)
            else:
                executable.export_library(tmp)
        except Exception as e:
            raise MeasurementError(
                "compile", f"could not link {artifact.structure_key} with {cross_compiler or 'the host compiler'}: "
                           f"{_first_line(e)}"
            ) from e
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _build(artifact: ModelArtifact, target: dict):
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    try:
        model = onnx.load_from_string(artifact.onnx)
        shapes = {s.name: list(s.shape) for s in artifact.inputs}
        if artifact.custom_ops:  # 1-bit convolutions, lowered to bitserial kernels
            module = tvm_binary.import_onnx(model, shapes)
        else:
            module = from_onnx(model, shape_dict=shapes, keep_params_in_input=False)
    except Exception as e:
        raise MeasurementError("compile",
                               f"TVM could not import {artifact.structure_key}'s ONNX: {_first_line(e)}") from e
    try:
        return tvm.compile(module, tvm.target.Target(target))
    except Exception as e:
        raise MeasurementError("compile", f"TVM could not compile {artifact.structure_key} for {json.dumps(target)}: "
                                          f"{_first_line(e)}") from e


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
