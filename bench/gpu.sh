#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and a CUDA build of torch already installed:
# build the extension for this card, run the test suite (CUDA and Triton tests run on
# the GPU there) and print the benchmark table with the card's name.
#   bash bench/gpu.sh [all|test|bench] [extra pytest arguments for the benchmarks, e.g. -k xcorr]
# "test" builds and runs the tests, "bench" builds and runs the benchmarks, "all" (the
# default) both: split them where one command may only run for a few minutes.
# The table goes to $GPU_RESULTS: by default $OUT/results-gpu.md when $OUT is set (the
# folder a remote runner sends back), else bench/results-gpu.md; the log beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=all
case "${1:-}" in all | test | bench) STAGE=$1 && shift ;; esac
PYTHON=${PYTHON:-python3}
if [[ -n "${GPU_RESULTS:-}" ]]; then
  RESULTS=$GPU_RESULTS
elif [[ -n "${OUT:-}" ]]; then
  RESULTS=$OUT/results-gpu.md
else
  RESULTS=bench/results-gpu.md
fi
export PYTHONUNBUFFERED=1
exec > >(tee "${RESULTS%.md}.log") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PYTHON -c 'import torch, triton; print("torch", torch.__version__, "CUDA", torch.version.cuda, "triton", triton.__version__)'
# Build for the card in this machine unless the caller chose architectures.
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PYTHON -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
export TORCH_CUDA_ARCH_LIST
$PYTHON setup.py -q build_ext --inplace
if [[ $STAGE != bench ]]; then
  # Keep going to the benchmarks when a test fails: both results are wanted.
  $PYTHON -m pytest tests -q -p no:cacheprovider || echo "gpu.sh: some tests FAILED (see above)"
fi
if [[ $STAGE != test ]]; then
  $PYTHON -m bench --markdown "$RESULTS" "$@"
fi
