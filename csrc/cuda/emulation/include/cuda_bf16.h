// The emulated 16-bit float types (csrc/cuda/emulation/half.h) under the CUDA header name.
#pragma once
#include "cuda/emulation/half.h"
