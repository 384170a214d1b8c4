// Self-tests of the emulated CUDA runtime (kernels/selftest.cpp): small kernels whose exact
// results or reported misuse the tests check.
#pragma once

#include <string>
#include <vector>

#include "cuda/emulation/host.h"

namespace gfn_fast {
namespace emu {

struct SelftestResult {
  int status = 0;             // cudaError_t of the launch
  std::string message;        // the runtime's report when status != 0
  std::vector<float> values;  // the kernel's output
  Traffic traffic;            // of this test's launches
};

// Runs the self-test kernel `name` on `input` (`arg`: a width, an offset or a grid size, by
// test). Names: block_sum, block_sum_without_barrier, copy_packs, shuffles, grid_sum,
// to_half_bits, to_bf16_bits, half_bits_to_float, bf16_bits_to_float (bits as floats), and
// the misuses barrier_in_branch, two_barriers, shuffle_with_exited_lane,
// shuffle_mask_without_caller, shuffle_reads_outside_mask, shuffle_against_barrier,
// shared_out_of_bounds, shared_read_unwritten, shared_write_after_read, grid_sync_plain.
SelftestResult run_selftest(const std::string& name, const std::vector<float>& input, int arg);

}  // namespace emu
}  // namespace gfn_fast
