// Per-block shared memory (runtime.h's SharedArray): each block's copy of each declaration,
// filled with 0xff bytes, and the checks of every access: bounds, reads of unwritten
// elements, and races between the block's threads since its last barrier (whatever order
// the fibers run in, a conflicting pair of accesses in one barrier interval is reported).
#include <string>

#include "cuda/emulation/state.h"

namespace gfn_fast {
namespace emu {

SharedSlot* shared_slot(const void* declaration, size_t element_size, int64_t count) {
  Block& block = *current_thread().block;
  for (SharedSlot& slot : block.slots) {
    if (slot.declaration == declaration) return &slot;
  }
  SharedSlot& slot = block.slots.emplace_back();
  slot.declaration = declaration;
  slot.element_size = element_size;
  slot.count = count;
  slot.data.assign(element_size * static_cast<size_t>(count), 0xff);
  slot.shadow.assign(static_cast<size_t>(count), Shadow{});
  return &slot;
}

namespace {

std::string element_of(const SharedSlot& slot, int64_t index) {
  return "element " + std::to_string(index) + " of a shared array of " +
         std::to_string(slot.count) + " elements of " + std::to_string(slot.element_size) +
         " bytes";
}

void check_bounds(const SharedSlot& slot, int64_t index, const char* access) {
  if (index < 0 || index >= slot.count) {
    fail_here(cudaErrorIllegalAddress, std::string("shared-memory ") + access +
                                           " out of bounds: " + element_of(slot, index));
  }
}

std::string thread_name(const Block& block, int linear) {
  if (linear == kSeveralThreads) return "several threads";
  return "thread " + describe(block.threads[static_cast<size_t>(linear)]->index);
}

}  // namespace

void shared_read(SharedSlot* slot, int64_t index, void* out) {
  check_bounds(*slot, index, "read");
  Thread& t = current_thread();
  const Block& block = *t.block;
  Shadow& s = slot->shadow[static_cast<size_t>(index)];
  if (!s.written) {
    fail_here(cudaErrorLaunchFailure,
              "reads " + element_of(*slot, index) +
                  " before any thread of the block wrote it (a missing __syncthreads()?)");
  }
  if (s.write_epoch == block.epoch && s.writer != t.linear) {
    fail_here(cudaErrorLaunchFailure,
              "shared-memory race: " + element_of(*slot, index) + " was written by " +
                  thread_name(block, s.writer) +
                  " and is read by this thread with no __syncthreads() between");
  }
  if (s.read_epoch != block.epoch) {
    s.read_epoch = block.epoch;
    s.reader = t.linear;
  } else if (s.reader != t.linear) {
    s.reader = kSeveralThreads;
  }
  std::memcpy(out, slot->data.data() + static_cast<size_t>(index) * slot->element_size,
              slot->element_size);
}

void shared_write(SharedSlot* slot, int64_t index, const void* value) {
  check_bounds(*slot, index, "write");
  Thread& t = current_thread();
  const Block& block = *t.block;
  Shadow& s = slot->shadow[static_cast<size_t>(index)];
  if (s.write_epoch == block.epoch && s.writer != t.linear) {
    fail_here(cudaErrorLaunchFailure, "shared-memory race: " + element_of(*slot, index) +
                                          " was written by " + thread_name(block, s.writer) +
                                          " and is written again by this thread with no "
                                          "__syncthreads() between");
  }
  if (s.read_epoch == block.epoch && s.reader != t.linear) {
    fail_here(cudaErrorLaunchFailure, "shared-memory race: " + element_of(*slot, index) +
                                          " was read by " + thread_name(block, s.reader) +
                                          " and is overwritten by this thread with no "
                                          "__syncthreads() between");
  }
  s.writer = t.linear;
  s.write_epoch = block.epoch;
  s.written = true;
  std::memcpy(slot->data.data() + static_cast<size_t>(index) * slot->element_size, value,
              slot->element_size);
}

}  // namespace emu
}  // namespace gfn_fast
