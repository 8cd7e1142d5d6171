"""What 1-bit arithmetic buys: a binary convolution and a binary network against float ones at equal shape.

    python -m benchmarks.binary_speedup [--quick] [--board]

Every model is measured by hilas's agents under the default measurement protocol (with 3 warm-up runs,
not 10: untuned float models take up to half a second a run; warm-up still lasts at least 1 s):
- binary: the ai.hilas.BinaryConv2d node (a layer) or a Bi-Real network from spaces.binary, compiled
  by TVM with hilas's bitserial kernels (devices.tvm_binary) and timed by the tvm-cpu kind;
- float, same TVM path: the same layer as an ONNX Conv, or the same network with float 3x3
  convolutions in place of the binary ones (no sign), compiled by TVM's default pipeline, untuned
  (what ssh-tvm and tvm-cpu run for float models), timed by tvm-cpu;
- float, onnxruntime: the same float model on the onnxruntime-cpu kind (hand-tuned float kernels:
  the fastest float path on this host).
All three run on one core with one thread. A binary layer's time includes binarising and packing
its input; a float layer's does not need to. With --board the binary and TVM float models are also
measured on the emulated aarch64 board of tests/board (qemu-user): emulated timings are not ARM
timings. Results go to benchmarks/results/binary-speedup.* and into benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from datetime import datetime

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from hilas import devices
from hilas.devices.host import cpu_model, host_state
from hilas.devices.tvm_cpu import TvmCpuAgent
from hilas.spaces.binary import BiRealNet

from .results_io import RESULTS, update_readme, write_atomically

SEED = 0
# (channels, input size, stride): the widest digits candidate's layers, then a larger one (FACTS.md's shape).
LAYERS = [(32, 8, 1), (128, 8, 1), (128, 8, 2), (128, 4, 1), (256, 14, 1)]
# (stage widths, input channels, input size): digits candidates, then a CIFAR-sized network.
NETWORKS = [((32, 32, 32), 1, 8), ((64, 64, 64), 1, 8), ((128, 128, 128), 1, 8), ((64, 128, 256), 3, 32)]
# Under qemu the largest layer and the CIFAR-sized network take minutes a measurement: the board skips them.
BOARD_LAYERS, BOARD_NETWORKS = LAYERS[:-1], NETWORKS[:-1]
HOST_PROTOCOL = devices.MeasurementProtocol(warmup_runs=3)
QUICK_PROTOCOL = devices.MeasurementProtocol(warmup_seconds=0.1, min_seconds=0.1, cooldown_seconds=0.0)
BOARD_PROTOCOL = devices.MeasurementProtocol(warmup_runs=2, warmup_seconds=0.2, min_samples=10, min_seconds=0.5,
                                             max_seconds=20.0, rounds=3, cooldown_seconds=0.0)


def layer_models(channels: int, size: int, stride: int) -> tuple[devices.ModelArtifact, devices.ModelArtifact]:
    """One 3x3 convolution, padding 1, `channels` in and out: as a BinaryConv2d node and as a float Conv."""
    rng = np.random.default_rng(SEED)
    weight = np.where(rng.random((channels, channels, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    name = f"conv{channels}-{size}x{size}-s{stride}"
    inputs = (devices.TensorSpec("input", (1, channels, size, size)),)
    attributes = {"strides": [stride, stride], "pads": [1, 1, 1, 1]}
    out_size = (size + 2 - 3) // stride + 1
    binary = helper.make_node("BinaryConv2d", ["input", "w", "scale"], ["y"], domain="ai.hilas", **attributes)
    floating = helper.make_node("Conv", ["input", "w"], ["y"], kernel_shape=[3, 3], **attributes)
    made = []
    for node, initializers, extra in ((binary, [weight, scale], [helper.make_opsetid("ai.hilas", 1)]),
                                      (floating, [weight], [])):
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                               list(inputs[0].shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                 [1, channels, out_size, out_size])],
                                  [numpy_helper.from_array(a, n) for a, n in zip(initializers, ["w", "scale"])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", devices.artifact.OPSET), *extra])
        model.ir_version = 8
        made.append(devices.ModelArtifact(f"{name}-{'binary' if extra else 'float'}", model.SerializeToString(),
                                          inputs))
    return made[0], made[1]


def float_counterpart(net: BiRealNet) -> nn.Module:
    """The network with a float 3x3 convolution (no sign, no scale) in place of each binary one."""
    floating = copy.deepcopy(net)
    for block in (b for stage in floating.stages for b in stage):
        binary = block.conv
        block.conv = nn.Conv2d(binary.in_channels, binary.out_channels, 3, binary.stride, 1, bias=False)
        with torch.no_grad():
            block.conv.weight.copy_(binary.weight)
    return floating.eval()


def network_models(widths: tuple[int, ...], in_channels: int,
                   size: int) -> tuple[devices.ModelArtifact, devices.ModelArtifact]:
    torch.manual_seed(SEED)
    net = BiRealNet(widths, in_channels=in_channels).eval()
    example = torch.zeros(1, in_channels, size, size)
    name = f"bireal-{'.'.join(map(str, widths))}-{in_channels}x{size}x{size}"
    return (devices.export_onnx(net, example, f"{name}-binary"),
            devices.export_onnx(float_counterpart(net), example, f"{name}-float"))


def measure(agent, artifact: devices.ModelArtifact, protocol: devices.MeasurementProtocol) -> dict:
    try:
        latency = agent.measure(artifact, protocol)
    except devices.MeasurementError as e:
        print(f"  {artifact.structure_key} on {agent.kind}: {e}", flush=True)
        return {"error": str(e)}
    print(f"  {artifact.structure_key} on {agent.kind}: {latency.median_ms:.4g} ms (rounds CV {latency.rounds_cv:.1%})",
          flush=True)
    return {"median_ms": latency.median_ms, "p90_ms": latency.p90_ms, "rounds_cv": latency.rounds_cv, "n": latency.n}


def host_rows(pairs: list[tuple[str, devices.ModelArtifact, devices.ModelArtifact]],
              protocol: devices.MeasurementProtocol, cache: str) -> tuple[list[dict], dict]:
    tvm_cpu = TvmCpuAgent(cache_dir=cache)
    tvm_cpu.prepare()  # first: onnxruntime-cpu pins this very process, which would leave one core to choose from
    onnxruntime = devices.OnnxRuntimeCpuAgent()
    onnxruntime.prepare()
    rows = []
    try:
        for kind, binary, floating in pairs:
            rows.append({"what": kind, "model": binary.structure_key.removesuffix("-binary"),
                         "binary_tvm": measure(tvm_cpu, binary, protocol),
                         "float_tvm": measure(tvm_cpu, floating, protocol),
                         "float_onnxruntime": measure(onnxruntime, floating, protocol)})
        infos = {"tvm-cpu": tvm_cpu.info(), "onnxruntime-cpu": onnxruntime.info()}
    finally:
        tvm_cpu.close()
        onnxruntime.close()
    return rows, infos


def board_rows(pairs: list[tuple[str, devices.ModelArtifact, devices.ModelArtifact]],
               cache: str) -> tuple[list[dict], dict]:
    from hilas.devices.ssh_tvm import SshTvmAgent
    from tests.board import emulated

    with emulated.running(emulated.build()) as board:
        agent = SshTvmAgent(host=board.host, port=board.port, user=board.user, key_file=str(board.key_file),
                            known_hosts=str(board.known_hosts), target=board.target,
                            cross_compiler=board.cross_compiler, python=board.python, workdir=board.workdir,
                            num_threads=1, cache_dir=cache)
        agent.prepare()
        try:
            rows = [{"what": kind, "model": binary.structure_key.removesuffix("-binary"),
                     "binary_tvm": measure(agent, binary, BOARD_PROTOCOL),
                     "float_tvm": measure(agent, floating, BOARD_PROTOCOL)} for kind, binary, floating in pairs]
            info = agent.info()
        finally:
            agent.close()
    return rows, info


def run(quick: bool, board: bool) -> dict:
    import tvm

    protocol = QUICK_PROTOCOL if quick else HOST_PROTOCOL
    layers = LAYERS[:2] if quick else LAYERS
    networks = NETWORKS[:1] if quick else NETWORKS
    pairs = {**{("layer", shape): layer_models(*shape) for shape in layers},
             **{("network", spec): network_models(*spec) for spec in networks}}
    on_board = [("layer", shape) for shape in layers if shape in BOARD_LAYERS] + \
               [("network", spec) for spec in networks if spec in BOARD_NETWORKS]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        rows, infos = host_rows([(what, *models) for (what, _), models in pairs.items()], protocol, cache)
        result = {
            "date": datetime.now().isoformat(timespec="seconds"),
            "command": "python -m benchmarks.binary_speedup" + (" --quick" if quick else "")
                       + (" --board" if board else ""),
            "host": {"cpu": cpu_model(), "cores": infos["tvm-cpu"]["device"]["cores"], "os": platform.platform(),
                     "python": platform.python_version(), "load_average_after": host_state()["load_average"]},
            "versions": {"tvm": tvm.__version__, "onnxruntime": infos["onnxruntime-cpu"]["runtime"]["version"],
                         "torch": torch.__version__, "onnx": onnx.__version__},
            "agents": {name: {"runtime": info["runtime"]} for name, info in infos.items()},
            "protocol": protocol.to_dict(), "seed": SEED, "rows": rows,
        }
        if board:
            result["board_rows"], board_info = board_rows([(what, *pairs[what, spec]) for what, spec in on_board],
                                                          cache)
            result["board"] = {"device": board_info["device"], "runtime": board_info["runtime"], "emulated": True,
                               "protocol": BOARD_PROTOCOL.to_dict()}
    result["seconds"] = round(time.perf_counter() - started)
    return result


def _ms(cell: dict) -> str:
    return f"{cell['median_ms']:.4g}" if "median_ms" in cell else "failed"


def _ratio(slow: dict, fast: dict) -> str:
    if "median_ms" not in slow or "median_ms" not in fast:
        return "-"
    return f"**{slow['median_ms'] / fast['median_ms']:.2f}x**"


def render_markdown(result: dict) -> str:
    host, versions = result["host"], result["versions"]
    tvm_runtime = result["agents"]["tvm-cpu"]["runtime"]
    lines = [f"Measured {result['date']} on {host['cpu']} ({host['cores']} cores; {host['os']}; load average "
             f"{host['load_average_after'][0] if host['load_average_after'] else '?'} at the end), Python "
             f"{host['python']}, TVM {versions['tvm']} (target {json.dumps(tvm_runtime['target'])}), onnxruntime "
             f"{versions['onnxruntime']}, torch {versions['torch']}; one core (pinned), one thread; weights seeded "
             f"with {result['seed']}. Command: `{result['command']}` ({result['seconds']} s). Medians of the "
             f"protocol's rounds, in ms.\n",
             "| what | model | binary, TVM bitserial | float, TVM untuned | float, onnxruntime | speed-up vs TVM float "
             "| speed-up vs onnxruntime |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['what']} | {r['model']} | {_ms(r['binary_tvm'])} | {_ms(r['float_tvm'])} | "
                     f"{_ms(r['float_onnxruntime'])} | {_ratio(r['float_tvm'], r['binary_tvm'])} | "
                     f"{_ratio(r['float_onnxruntime'], r['binary_tvm'])} |")
    if "board_rows" in result:
        board = result["board"]
        lines += ["", f"Emulated board (qemu-user {board['device'].get('machine', '?')} on the same host, target "
                      f"{json.dumps(board['runtime']['target'])}, one TVM thread). **Emulated timings are not ARM "
                      f"timings**: qemu translates each NEON instruction into host code, so these ratios say "
                      f"nothing about a real board's.\n",
                  "| what | model | binary, TVM bitserial (emulated) | float, TVM untuned (emulated) | speed-up |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {r['what']} | {r['model']} | {_ms(r['binary_tvm'])} | {_ms(r['float_tvm'])} | "
                  f"{_ratio(r['float_tvm'], r['binary_tvm'])} |" for r in result["board_rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.binary_speedup", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two layers, one network, a short protocol: checks "
                                                             "the wiring; writes results but not the README")
    parser.add_argument("--board", action="store_true", help="also measure on the emulated aarch64 board")
    args = parser.parse_args(argv)
    result = run(args.quick, args.board)
    markdown = render_markdown(result)
    print(markdown)
    name = "binary-speedup" + ("-quick" if args.quick else "")
    write_atomically(RESULTS / f"{name}.json", json.dumps(result, indent=2, default=str) + "\n")
    write_atomically(RESULTS / f"{name}.md", f"# Binary against float at equal shape\n\n{markdown}")
    if not args.quick:
        update_readme("binary-speedup", markdown)


if __name__ == "__main__":
    main()
