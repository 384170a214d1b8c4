// The part of CUDA's cooperative groups the kernels use, for the emulated runtime: the grid
// of a cooperative launch and its barrier.
#pragma once

#include "cuda/emulation/runtime.h"

namespace cooperative_groups {

class grid_group {
 public:
  void sync(const char* file = __builtin_FILE(), int line = __builtin_LINE()) const {
    ::gfn_fast::emu::grid_sync(file, line);
  }
};

inline grid_group this_grid() { return grid_group{}; }

}  // namespace cooperative_groups
