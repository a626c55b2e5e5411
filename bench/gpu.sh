#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and a CUDA build of torch already installed:
# build the extension for this card, run the whole test suite (CUDA and Triton
# tests run on the GPU there), and print the benchmark table with the card's name.
#   bash bench/gpu.sh [extra pytest arguments for the benchmarks, e.g. -k xcorr]
# The table is also written to $GPU_RESULTS (default bench/results-gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# Build for the card in this machine unless the caller chose architectures.
TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PYTHON -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
export TORCH_CUDA_ARCH_LIST
$PYTHON setup.py -q build_ext --inplace
# Keep going to the benchmarks when a test fails: both results are wanted.
$PYTHON -m pytest tests -q -p no:cacheprovider || echo "gpu.sh: some tests FAILED (see above)"
$PYTHON -m bench --markdown "${GPU_RESULTS:-bench/results-gpu.md}" "$@"
