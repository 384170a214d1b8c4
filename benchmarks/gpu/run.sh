#!/usr/bin/env bash
# The whole GPU check in one call, for the H200 machine (torch with CUDA 13, nvcc, ninja;
# no downloads): build the extension, run the CUDA tests, run the GPU benchmark.
#
#   benchmarks/gpu/run.sh OUTDIR
#
# Writes OUTDIR/log.txt (everything), OUTDIR/build.log, OUTDIR/junit.xml (tests) and
# OUTDIR/results.json (the README's results shape; copy it to benchmarks/results/h200.json).
# Finishes within about 8 minutes: every phase has a timeout taken from one budget
# (GFN_FAST_GPU_BUDGET_S, default 470 s). Set GFN_FAST_COMMIT when the tree has no .git.
# Exit status: 0 when the build and the tests passed and the benchmark wrote its results.
set -uo pipefail

OUT=${1:?usage: benchmarks/gpu/run.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/../.."
exec > >(tee -a "$OUT/log.txt") 2>&1

BUDGET=${GFN_FAST_GPU_BUDGET_S:-470}
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
# A timeout leaving `reserve` seconds of the budget for the phases after it (at least 10 s).
tmo() {
  local t=$(($(left) - $1))
  [ "$t" -lt 10 ] && t=10
  echo "$t"
}
say() { echo "[gpu/run.sh +$(($(date +%s) - START))s] $*"; }
PY=${PYTHON:-python}
export GFN_FAST_COMMIT=${GFN_FAST_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
status=0

say "commit $GFN_FAST_COMMIT, budget ${BUDGET}s"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda, '| GPU', torch.cuda.get_device_name())"
nvcc --version | tail -n 2 | head -n 1 || true

# 1. Build (TORCH_CUDA_ARCH_LIST=9.0: H200 only, fastest build).
say "build"
build_ok=0
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} GFN_FAST_CUDA=1
if timeout "$(tmo 200)" $PY -m pip install --no-build-isolation --no-deps -e . \
  >"$OUT/build.log" 2>&1; then
  build_ok=1
else
  say "pip install -e . failed (tail of build.log below); trying setup.py build_ext --inplace"
  tail -n 30 "$OUT/build.log"
  if timeout "$(tmo 180)" $PY setup.py build_ext --inplace >>"$OUT/build.log" 2>&1; then
    build_ok=1
  fi
fi
if [ $build_ok = 1 ] && $PY -c "
import sys, gfn_fast as gf
print('build_info', gf.build_info())
sys.exit(gf.backend() != 'cuda')"; then
  say "build ok"
else
  say "BUILD FAILED"
  tail -n 60 "$OUT/build.log"
  exit 1
fi

# 2. The CUDA tests (those carrying the `cuda` marker; the slow ones deselected).
say "tests ($(left)s left)"
if $PY -c "import pytest" 2>/dev/null; then
  timeout "$(tmo 150)" $PY -m pytest -q -p no:cacheprovider -m "cuda or not slow" \
    --junitxml="$OUT/junit.xml" --durations=10 -rs tests/test_ops_cuda.py
  rc=$?
  if [ $rc != 0 ]; then
    status=1
    say "TESTS FAILED (exit $rc; 124 = timed out)"
  else
    say "tests passed"
  fi
else
  say "pytest is not installed here: tests NOT run"
  status=1
fi

# 3. The benchmark (writes results.json after each benchmark, so a timeout keeps the rest).
say "benchmark ($(left)s left)"
bench_args=()
if [ "$(left)" -lt 150 ]; then
  say "little time left: skipping the torch.compile rows"
  bench_args+=(--no-compile)
fi
timeout "$(tmo 5)" $PY benchmarks/bench_gpu.py --out "$OUT/results.json" "${bench_args[@]}"
rc=$?
if [ $rc != 0 ]; then
  status=1
  say "BENCHMARK FAILED or timed out (exit $rc); results.json may be partial"
fi
say "done, exit $status"
exit $status
