// The emulated CUDA runtime (csrc/cuda/emulation/runtime.h) under the CUDA header name.
#pragma once
#include "cuda/emulation/runtime.h"
