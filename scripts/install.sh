#!/usr/bin/env bash
# Installs gfn_fast with its native CPU kernels on a fresh machine.
#   bash scripts/install.sh         # the library, the trainer and the `gfn-fast` command
#   bash scripts/install.sh test    # plus the test and benchmark tools and torchgfn
set -euo pipefail
cd "$(dirname "$0")/.."

# The CPU build of torch (a plain `pip install torch` pulls a multi-GB CUDA build).
python -m pip install --quiet torch==2.13.0 setuptools wheel pybind11 ninja numpy
extras="train"
if [ "${1:-}" = "test" ]; then
  extras="train,test,bench"
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
