// csrc/cuda/logprob.cu compiled as C++ against the emulated CUDA runtime (no copy of its source).
#include "cuda/logprob.cu"
