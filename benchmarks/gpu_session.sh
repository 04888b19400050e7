#!/usr/bin/env bash
# Everything that needs a CUDA device, in one go (run from the repository root on a GPU machine):
# the CUDA kernel tests, the end-to-end trace check and the capture-overhead benchmarks.
# Results go to $OUT (or ./gpu-results). Wheels missing on the machine may sit in .whl/.
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || echo "editable install failed"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)"
} 2>&1 | tee "$OUT/machine.txt"
python3 -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py 2>&1 | tail -15 | tee "$OUT/kernels_cuda_tests.txt"
python3 benchmarks/gpu_trace_check.py 2>&1 | grep -v "^\[transformers\]" | tee "$OUT/trace_check.txt"
python3 benchmarks/gpu_trace_overhead.py 2>&1 | grep -v "^\[transformers\]" | tee "$OUT/trace_overhead_olmoe.txt"
python3 benchmarks/gpu_trace_overhead.py --family qwen3_moe --layers 6 --batch 4 --seq 2048 2>&1 \
  | grep -v "^\[transformers\]" | tee "$OUT/trace_overhead_qwen3.txt"
python3 benchmarks/gpu_capture_overhead.py 2>&1 | grep -v "^\[transformers\]" | tee "$OUT/capture_overhead_kernels.txt"
