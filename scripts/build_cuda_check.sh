#!/usr/bin/env bash
# Full CUDA build check on a machine without a GPU (README, "CUDA"): compiles and links
# the whole CUDA extension against a CUDA build of torch, imports it and checks that every
# op has a CUDA kernel registered.
#
#   scripts/build_cuda_check.sh [VENV] [BUILD_DIR]
#
# VENV (default .venv-cuda in the repository, ignored by git) gets torch==2.14.1 (a CUDA
# 13.0 build, 5.4 GB) once. The repository is copied (tar) into BUILD_DIR (default
# build/cuda-check, ignored by git and left out of the copy) and built there, so the
# checkout's own gfn_fast/_C*.so is never touched; object files are kept between runs so
# that rebuilds are incremental. Not part of .ci/run (5 GB per clean run).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-$REPO/.venv-cuda}
BUILD=${2:-$REPO/build/cuda-check}
PY=${PYTHON:-python3.11}
TORCH_PIN=${GFN_FAST_CUDA_TORCH:-2.14.1}

log() { echo "build_cuda_check: $*"; }

# 1. The CUDA toolkit root (nvcc on the PATH may be a wrapper script naming it).
if [ -z "${CUDA_HOME:-}" ]; then
  nvcc_path=$(command -v nvcc || true)
  [ -n "$nvcc_path" ] || { log "nvcc not found"; exit 1; }
  real=$(grep -o '/[^ "]*/bin/nvcc' "$nvcc_path" 2>/dev/null | head -n 1 || true)
  [ -n "$real" ] || real=$(readlink -f "$nvcc_path")
  CUDA_HOME=$(dirname "$(dirname "$real")")
fi
[ -x "$CUDA_HOME/bin/nvcc" ] || { log "no nvcc under CUDA_HOME=$CUDA_HOME"; exit 1; }
export CUDA_HOME
log "CUDA_HOME=$CUDA_HOME ($("$CUDA_HOME/bin/nvcc" --version | tail -n 2 | head -n 1))"

# 2. The virtualenv with a CUDA torch.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_PIN' or torch.version.cuda is None)" 2>/dev/null; then
  log "creating $VENV with torch==$TORCH_PIN (CUDA build)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "torch==$TORCH_PIN" setuptools wheel pybind11 ninja numpy \
    pytest hypothesis expecttest
fi
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
export CPATH="$SITE/nvidia/cu13/include${CPATH:+:$CPATH}"
log "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"

# 3. A copy of the repository (never build in the checkout: its _C*.so is the CPU build).
# Object files stay in $BUILD/.cuda-objects, so unchanged sources are not recompiled.
mkdir -p "$BUILD"
find "$BUILD" -mindepth 1 -maxdepth 1 ! -name .cuda-objects -exec rm -rf {} +
tar -C "$REPO" -cf - \
  --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude='*.egg-info' \
  --exclude=__pycache__ --exclude=.hypothesis --exclude=.pytest_cache --exclude=.ruff_cache \
  --exclude=./runs --exclude='./gfn_fast/_C*.so' . | tar -C "$BUILD" -xf -
log "building in $BUILD (TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=2)"
start=$(date +%s)
(
  cd "$BUILD"
  GFN_FAST_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-2} \
    "$VENV/bin/python" setup.py --quiet build_ext --inplace --build-temp "$BUILD/.cuda-objects"
) 2>&1 | grep -v -E "^(running|copying|creating)|SetuptoolsDeprecationWarning|^\s*!!|^\s*\*{5,}|^\s*$" || true
ls "$BUILD"/gfn_fast/_C*.so >/dev/null || { log "FAILED: no extension built"; exit 1; }
log "built in $(($(date +%s) - start)) s"

# 4. Import it without a GPU and check the CUDA registrations.
cd /
PYTHONPATH="$BUILD" "$VENV/bin/python" - <<'EOF'
import json

import torch

import gfn_fast
from gfn_fast import _backend

assert _backend._native is not None, f"gfn_fast._C failed to import: {_backend._load_error}"
assert gfn_fast.__file__.startswith(__import__("os").environ["PYTHONPATH"]), gfn_fast.__file__
assert not torch.cuda.is_available(), "this check is meant for machines without a GPU"
ops = [
    "segment_sum", "segment_sum_backward", "logprob_from_logits", "logprob_from_logits_backward",
    "batch_coefficients", "divergence_loss_fused", "divergence_loss_backward",
]
missing = [
    f"{op}/{key}"
    for op in ops
    for key in ("CUDA", "CPU")
    if not torch._C._dispatch_has_kernel_for_dispatch_key(f"gfn_fast::{op}", key)
]
assert not missing, f"kernels not registered: {missing}"
info = json.loads(_backend._native.build_info())
assert info["cuda"] is True and info["cuda_arch_list"] == "9.0", info
print("build_cuda_check: build_info", info)
print("build_cuda_check: backend() =", gfn_fast.backend(), "(no GPU here)")
print(f"build_cuda_check: OK, CUDA and CPU kernels registered for {len(ops)} ops")
EOF

# 5. The CUDA tests of the op suite must collect and skip cleanly here.
cd "$BUILD"
PYTHONPATH="$BUILD" "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "cuda" tests/ops \
  2>&1 | tail -n 3
