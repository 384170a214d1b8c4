// csrc/cuda/batch.cu compiled as C++ against the emulated CUDA runtime (no copy of its source).
#include "cuda/batch.cu"
