#!/usr/bin/env bash
# Installs gfn_fast with its native CPU kernels.
#   bash scripts/install.sh         # the library, the trainer and the `gfn-fast` command
#   bash scripts/install.sh test    # plus the test and benchmark tools, torchgfn, and the
#                                   # emulated CUDA kernels (the cuda_emulated backend)
#
# torch: an installed torch that meets pyproject.toml's requirement (>= 2.6), CPU or CUDA
# build, is kept. Without one, torch 2.13.0 is installed from PyTorch's CPU index (a plain
# `pip install torch` on Linux pulls the CUDA build and several GB of CUDA libraries); set
# GFN_FAST_TORCH_INDEX=https://download.pytorch.org/whl/cu126 (or another CUDA index of
# PyTorch's) for a CUDA build instead.
#
# The extension's object files stay in build/ (ignored by git), so running this again
# recompiles only the C++ sources that changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if python -c "import sys, torch; from torch.torch_version import TorchVersion as V; sys.exit(V(torch.__version__) < (2, 6))" 2>/dev/null; then
  echo "install.sh: keeping the installed torch $(python -c 'import torch; print(torch.__version__)')"
else
  index=${GFN_FAST_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
  echo "install.sh: installing torch 2.13.0 from $index"
  # One retry: where the index cannot be reached (a machine with a local wheel mirror), pip
  # falls back to the configured sources quickly.
  python -m pip install --quiet --retries 1 torch==2.13.0 --index-url "$index"
fi
python -m pip install --quiet setuptools wheel pybind11 ninja numpy
extras="train"
if [ "${1:-}" = "test" ]; then
  extras="train,test,bench"
  # The CUDA kernel sources also run on the CPU in the tests (docs/emulation.md).
  export GFN_FAST_CUDA_EMULATION=1
fi
# --no-build-isolation: the extension must compile against the torch installed above.
python -m pip install --quiet --no-build-isolation -e ".[${extras}]"
if [ "${1:-}" = "test" ]; then
  # torchgfn for the peer cross-checks. --no-deps keeps the CPU torch and numpy 2
  # (torchgfn pins numpy<2 but runs on numpy 2).
  python -m pip install --quiet tensordict einops dill torch_geometric linear-attention-transformer
  python -m pip install --quiet --no-deps torchgfn==2.4.1
fi
python -c "import gfn_fast as gf; print('gfn_fast', gf.__version__, 'backend:', gf.backend())"
