#!/usr/bin/env bash
# Bare `nvcc -c` of every CUDA kernel file for sm_80 and sm_90. The launchers include no
# torch headers, so this needs nothing but nvcc. Skips (exit 0) when nvcc is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
files=(csrc/cuda/*.cu)
if ! command -v nvcc >/dev/null 2>&1; then
  echo "check_cuda_compile: nvcc not found, skipped"
  exit 0
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "check_cuda_compile: no .cu files"
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for f in "${files[@]}"; do
  for arch in 80 90; do
    nvcc -c -std=c++17 -O3 -Xcompiler -Wall,-Wextra -gencode "arch=compute_${arch},code=sm_${arch}" \
      -Icsrc "$f" -o "$out/$(basename "$f" .cu)_sm${arch}.o"
  done
  echo "check_cuda_compile: $f ok (sm_80, sm_90)"
done
