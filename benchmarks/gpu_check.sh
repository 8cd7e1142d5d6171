#!/usr/bin/env bash
# Checks the cuda device kind on a machine with an NVIDIA GPU: tests/test_cuda.py (its GPU tests
# run there), then the agent's info() and one measurement of the drift reference model with the
# default MeasurementProtocol.
#
# Needs python3 with torch (a CUDA build), onnx, onnxruntime, numpy and pytest. hilas need not be
# installed (the repository goes on PYTHONPATH) and no network is used. Takes about a minute; each
# step has a time limit, so it ends within 4 minutes. The log goes to $OUT/gpu_check.log when OUT
# is set, else to /tmp/gpu_check.log. Exit status 0 when every step passed.
#
# Usage: bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
log=${OUT:-/tmp}/gpu_check.log
exec > >(tee "$log") 2>&1
failed=0

echo "== versions"
nvidia-smi --query-gpu=name,driver_version,uuid --format=csv || echo "nvidia-smi did not answer"
timeout 60 python3 -c '
import sys, torch, onnx, onnxruntime as ort
print("python", sys.version.split()[0], "| torch", torch.__version__, "CUDA", torch.version.cuda,
      "cuDNN", torch.backends.cudnn.version(), "| onnx", onnx.__version__, "| onnxruntime", ort.__version__,
      ort.get_available_providers())
print("GPUs visible to torch:", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
' || failed=1

echo "== tests/test_cuda.py"
timeout 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py || failed=1

echo "== CudaAgent().info() and the reference model with the default protocol"
timeout 60 python3 - <<'EOF' || failed=1
import json

from devices import MeasurementProtocol, reference_artifact
from devices.cuda import CudaAgent

agent = CudaAgent()
agent.prepare()
try:
    print(json.dumps(agent.info(), indent=2))
    latency = agent.measure(reference_artifact(), MeasurementProtocol())
    print(json.dumps({"median_ms": latency.median_ms, "p90_ms": latency.p90_ms, "rounds_cv": latency.rounds_cv,
                      "n": latency.n, "inner_runs": latency.inner_runs, "runtime": latency.runtime}, indent=2))
finally:
    agent.close()
EOF

echo "== gpu_check: $([ $failed = 0 ] && echo passed || echo FAILED)"
exit $failed
