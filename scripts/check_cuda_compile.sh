#!/usr/bin/env bash
# Compile-check csrc/elastic_attention_cuda.cu with nvcc on a machine without a GPU or a CUDA torch.
#   scripts/check_cuda_compile.sh TORCH_CUDA_INCLUDE [SM]
# TORCH_CUDA_INCLUDE: the torch/include folder of a CUDA build of the same torch version (e.g. unzip
# the include/ files of PyPI's torch wheel); the CPU wheel lacks c10/cuda. Uses torch's nvcc flags.
set -euo pipefail
cd "$(dirname "$0")/.."
INC=$1
SM=${2:-90}
PYINC=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
nvcc -c -std=c++20 -O3 -Xcompiler -fPIC --expt-relaxed-constexpr \
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
  -D__CUDA_NO_HALF2_OPERATORS__ -DTORCH_EXTENSION_NAME=_C \
  -gencode "arch=compute_$SM,code=sm_$SM" -I"$INC" -I"$INC/torch/csrc/api/include" -I"$PYINC" \
  csrc/elastic_attention_cuda.cu -o /tmp/elastic_attention_cuda.o
echo "compiled: /tmp/elastic_attention_cuda.o (sm_$SM)"
