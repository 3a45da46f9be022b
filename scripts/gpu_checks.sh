#!/usr/bin/env bash
# Every GPU check of lowp in one prepared run (issue 18 item 6, issue 16 item 7), writing its results under $OUT.
#
#   bash scripts/gpu_checks.sh            # from the repository root, on a machine with a CUDA GPU
#   bash scripts/gpu_checks.sh tensor-core cuda-tests    # only the named steps (split a run in two if needed)
#
# Through the device tool: run(command="bash scripts/gpu_checks.sh", timeout_s=600). About 8-9 minutes on an H200
# (most of it torch.compile building the CUDA kernels and the CPU references); each step has its own timeout, so a
# hang in one still leaves the others' results. Files written under $OUT (default ./gpu-results):
#   env.txt                   GPU, driver, torch / CUDA / Triton versions
#   tensor-core-gpu.md        scripts/tensor_core_scaled_mm.py: accumulation model vs torch._scaled_mm
#                             (copy it to docs/results/tensor-core-gpu.md)
#   cuda-tests.log            pytest tests/gpu/test_cuda_bitexact.py (the `cuda`-marked bit-exactness suite)
#   bench-quantize-cuda.txt   benchmarks/bench_quantize.py --device cuda (ratios to the GPU's own add/clone)
#   bench-emulate-cuda.txt    benchmarks/bench_emulate.py --device cuda (MLP and CNN step ratios to FP32)
#   summary.txt               each step's exit status
# Nothing here is needed by CI; without a GPU every step says so and exits.
set -u -o pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
: > "$OUT/summary.txt"

WANT=" ${*:-tensor-core cuda-tests bench-quantize bench-emulate} "

step() {  # step NAME TIMEOUT LOGFILE COMMAND...
  local name=$1 limit=$2 log=$3; shift 3
  [[ $WANT == *" $name "* ]] || return 0
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  echo "$name: exit $rc ($((SECONDS - t0)) s, limit $limit s)" | tee -a "$OUT/summary.txt"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available',
torch.cuda.is_available()); import triton; print('triton', triton.__version__)" 2>&1; } | tee "$OUT/env.txt"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "gpu_checks: no CUDA device visible to torch; nothing to run" | tee -a "$OUT/summary.txt"; exit 2; }

step tensor-core 150 tensor-core.log python3 scripts/tensor_core_scaled_mm.py --k 4096 16384 --out "$OUT/tensor-core-gpu.md"
step cuda-tests 300 cuda-tests.log python3 -m pytest tests/gpu/test_cuda_bitexact.py -q -rs -p no:cacheprovider
step bench-quantize 60 bench-quantize-cuda.txt python3 benchmarks/bench_quantize.py --device cuda --sizes 24 26 --repeats 10
step bench-emulate 60 bench-emulate-cuda.txt python3 benchmarks/bench_emulate.py --device cuda --tasks mlp,cnn --steps 10 --rounds 3
# its lines are in tensor-core-gpu.md (kept if that is missing); keeps $OUT within the tool's 8 files
[[ -s "$OUT/tensor-core-gpu.md" ]] && rm -f "$OUT/tensor-core.log"
cat "$OUT/summary.txt"
