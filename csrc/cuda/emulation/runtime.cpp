// The emulated CUDA runtime (runtime.h): launches, the fiber scheduler, barriers, warp
// shuffles, grid synchronisation and launch errors. Shared memory is in shared_memory.cpp,
// the traffic counters in traffic.cpp.
//
// A launch runs on the calling thread. Its threads are fibers; a scheduling round runs every
// runnable fiber until it blocks (at a barrier or shuffle) or exits, then the waits that can
// complete are resolved. A round in which nothing can complete is a deadlock. Every misuse
// is reported through the launch status and last_error_message(), and the launch stops.
#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/emulation/host.h"
#include "cuda/emulation/state.h"
#include "cuda/emulation/traffic.h"

namespace gfn_fast {
namespace emu {

std::string describe(const uint3& v) {
  std::ostringstream out;
  out << "(" << v.x << ", " << v.y << ", " << v.z << ")";
  return out.str();
}

namespace {


std::string where(const char* file, int line) {
  std::string f = file;
  const size_t slash = f.rfind('/');
  if (slash != std::string::npos) f = f.substr(slash + 1);
  return f + ":" + std::to_string(line);
}

const char* shuffle_name(Shuffle kind) {
  switch (kind) {
    case Shuffle::kIdx:
      return "__shfl_sync";
    case Shuffle::kUp:
      return "__shfl_up_sync";
    case Shuffle::kDown:
      return "__shfl_down_sync";
    case Shuffle::kXor:
      return "__shfl_xor_sync";
  }
  return "shuffle";
}

std::string hex(unsigned mask) {
  char buffer[16];
  std::snprintf(buffer, sizeof(buffer), "0x%08x", mask);
  return buffer;
}

std::string describe_wait(const Thread& t) {
  switch (t.wait) {
    case Wait::kRunnable:
      return "is running";
    case Wait::kBarrier:
      return "waits at __syncthreads() (" + where(t.file, t.line) + ")";
    case Wait::kGridSync:
      return "waits at grid.sync() (" + where(t.file, t.line) + ")";
    case Wait::kShuffle:
      return "waits at " + std::string(shuffle_name(t.kind)) + " with mask " + hex(t.mask) + " (" +
             where(t.file, t.line) + ")";
    case Wait::kExited:
      return "has exited";
  }
  return "";
}

// "segment_sum_kernel<float, float, int, double>" out of the launch's kernel signature.
std::string kernel_label(const std::string& signature) {
  const std::string key = "Kernel = ";
  size_t begin = signature.find(key);
  if (begin == std::string::npos) return signature;
  begin += key.size();
  std::string name = signature.substr(begin, signature.find_first_of(";]", begin) - begin);
  if (!name.empty() && name[0] == '&') name = name.substr(1);
  const size_t colon = name.rfind("::", name.find('<'));
  return colon == std::string::npos ? name : name.substr(colon + 2);
}

// Records the launch's first error; the scheduler stops at the end of the current step.
void fail_launch(Launch& launch, cudaError_t status, const Thread* thread,
                 const std::string& what) {
  if (launch.status != cudaSuccess) return;
  launch.status = status;
  std::ostringstream out;
  out << "kernel " << kernel_label(launch.config.kernel);
  if (thread != nullptr) {
    out << ", block " << describe(thread->block->index) << ", thread " << describe(thread->index);
  }
  out << ": " << what;
  launch.message = out.str();
}

void switch_to_scheduler(Thread& t) {
  t.counting = counting();
  set_counting(false, 0);
  Fiber::switch_to(t.fiber, Fiber::of_this_thread());
}


void thread_entry(void* arg) {
  Thread& t = *static_cast<Thread*>(arg);
  Launch& launch = *worker().launch;
  launch.thread_main(launch.closure);
  t.wait = Wait::kExited;
  set_counting(false, 0);
  t.counting = false;
  Fiber::switch_to(t.fiber, Fiber::of_this_thread());
  __builtin_unreachable();
}

void run_fiber(Worker& w, Thread& t) {
  w.current = &t;
  set_counting(t.counting, t.fiber.stack_low());
  Fiber::switch_to(Fiber::of_this_thread(), t.fiber);
  set_counting(false, 0);
  w.current = nullptr;
}

int lane_of(const Thread& t) { return t.linear % kWarpSize; }

bool same_site(const Thread& a, const Thread& b) {
  return a.line == b.line && std::string(a.file) == b.file;
}

// The lane whose payload `lane` receives, or -1 when it lies outside the warp.
int source_lane(const Thread& t, int lane) {
  const int width = t.width;
  const int segment = lane & ~(width - 1);
  switch (t.kind) {
    case Shuffle::kIdx:
      return segment + (t.arg & (width - 1));
    case Shuffle::kUp: {
      const int src = lane - t.arg;
      return src < segment ? lane : src;
    }
    case Shuffle::kDown: {
      const int src = lane + t.arg;
      return src >= segment + width ? lane : src;
    }
    case Shuffle::kXor: {
      const int src = lane ^ (t.arg & (kWarpSize - 1));
      return src >= segment + width ? lane : src;
    }
  }
  return -1;
}

// Completes the shuffles of one warp whose partners have all arrived.
bool resolve_shuffles(Launch& launch, Block& block, int warp) {
  const int first = warp * kWarpSize;
  const int lanes = std::min<int>(kWarpSize, static_cast<int>(block.threads.size()) - first);
  Thread* const* lane_thread = block.threads.data() + first;
  bool progress = false;
  for (int l = 0; l < lanes; ++l) {
    Thread& t = *lane_thread[l];
    if (t.wait != Wait::kShuffle) continue;
    const unsigned mask = t.mask;
    if (!(mask >> l & 1u)) {
      fail_launch(launch, cudaErrorLaunchFailure, &t,
                  std::string(shuffle_name(t.kind)) + " (" + where(t.file, t.line) + "): mask " +
                      hex(mask) + " does not include the calling lane " + std::to_string(l));
      return false;
    }
    bool ready = true;
    for (int j = 0; j < kWarpSize; ++j) {
      if (!(mask >> j & 1u)) continue;
      if (j >= lanes) {
        fail_launch(launch, cudaErrorLaunchFailure, &t,
                    std::string(shuffle_name(t.kind)) + " (" + where(t.file, t.line) +
                        "): mask " + hex(mask) + " names lane " + std::to_string(j) +
                        ", but this warp has " + std::to_string(lanes) + " threads");
        return false;
      }
      const Thread& partner = *lane_thread[j];
      if (partner.wait == Wait::kExited) {
        fail_launch(launch, cudaErrorLaunchFailure, &t,
                    std::string(shuffle_name(t.kind)) + " (" + where(t.file, t.line) +
                        "): mask " + hex(mask) + " names lane " + std::to_string(j) +
                        ", which has exited (an inactive lane)");
        return false;
      }
      if (partner.wait != Wait::kShuffle) {
        ready = false;
        continue;
      }
      if (partner.kind != t.kind || partner.mask != mask || !same_site(partner, t) ||
          partner.width != t.width) {
        fail_launch(launch, cudaErrorLaunchFailure, &t,
                    "lanes " + std::to_string(l) + " and " + std::to_string(j) +
                        " of a warp meet at different shuffles: lane " + std::to_string(l) +
                        " " + describe_wait(t) + ", lane " + std::to_string(j) + " " +
                        describe_wait(partner));
        return false;
      }
    }
    if (!ready) continue;
    if (t.width < 1 || t.width > kWarpSize || (t.width & (t.width - 1)) != 0) {
      fail_launch(launch, cudaErrorLaunchFailure, &t,
                  std::string(shuffle_name(t.kind)) + ": width " + std::to_string(t.width) +
                      " is not a power of 2 in [1, 32]");
      return false;
    }
    for (int j = 0; j < lanes; ++j) {
      if (!(mask >> j & 1u)) continue;
      Thread& receiver = *lane_thread[j];
      const int src = source_lane(receiver, j);
      if (src < 0 || src >= lanes || !(mask >> src & 1u)) {
        fail_launch(launch, cudaErrorLaunchFailure, &receiver,
                    std::string(shuffle_name(t.kind)) + " (" + where(t.file, t.line) +
                        "): lane " + std::to_string(j) + " reads lane " + std::to_string(src) +
                        ", which is not in the mask " + hex(mask) + " (an undefined value)");
        return false;
      }
      receiver.result = lane_thread[src]->payload;
    }
    for (int j = 0; j < lanes; ++j) {
      if (mask >> j & 1u) lane_thread[j]->wait = Wait::kRunnable;
    }
    progress = true;
  }
  return progress;
}

// Releases a block barrier once every thread of the block waits at it.
bool resolve_barrier(Launch& launch, Block& block) {
  int waiting = 0, live = 0;
  const Thread* exited = nullptr;
  const Thread* first = nullptr;
  for (const Thread* t : block.threads) {
    if (t->wait == Wait::kExited) {
      if (exited == nullptr) exited = t;
      continue;
    }
    ++live;
    if (t->wait == Wait::kBarrier) {
      ++waiting;
      if (first == nullptr) first = t;
    }
  }
  if (waiting == 0 || waiting < live) return false;
  if (exited != nullptr) {
    fail_launch(launch, cudaErrorLaunchFailure, first,
                "__syncthreads() (" + where(first->file, first->line) + ") is reached by " +
                    std::to_string(waiting) + " of the block's " +
                    std::to_string(block.threads.size()) + " threads: thread " +
                    describe(exited->index) + " exited without reaching it");
    return false;
  }
  for (const Thread* t : block.threads) {
    if (!same_site(*t, *first)) {
      fail_launch(launch, cudaErrorLaunchFailure, t,
                  "threads of a block wait at different barriers: thread " +
                      describe(first->index) + " " + describe_wait(*first) + ", thread " +
                      describe(t->index) + " " + describe_wait(*t));
      return false;
    }
  }
  ++block.epoch;
  for (Thread* t : block.threads) t->wait = Wait::kRunnable;
  return true;
}

// Releases grid.sync() once every thread of the (cooperative) grid waits at it.
bool resolve_grid_sync(Launch& launch) {
  const Thread* first = nullptr;
  const Thread* exited = nullptr;
  for (const Block& b : launch.blocks) {
    for (const Thread* t : b.threads) {
      if (t->wait == Wait::kExited) {
        if (exited == nullptr) exited = t;
      } else if (t->wait != Wait::kGridSync) {
        return false;
      } else if (first == nullptr) {
        first = t;
      }
    }
  }
  if (first == nullptr) return false;
  if (exited != nullptr) {
    fail_launch(launch, cudaErrorLaunchFailure, first,
                "grid.sync() (" + where(first->file, first->line) +
                    ") is not reached by every thread of the grid: thread " +
                    describe(exited->index) + " of block " + describe(exited->block->index) +
                    " exited without reaching it");
    return false;
  }
  for (Block& b : launch.blocks) {
    for (Thread* t : b.threads) {
      if (!same_site(*t, *first)) {
        fail_launch(launch, cudaErrorLaunchFailure, t,
                    "threads of the grid wait at different grid.sync() calls: " +
                        describe_wait(*first) + " and " + describe_wait(*t));
        return false;
      }
    }
  }
  for (Block& b : launch.blocks) {
    ++b.epoch;
    for (Thread* t : b.threads) t->wait = Wait::kRunnable;
  }
  return true;
}

void report_deadlock(Launch& launch, const std::vector<Block*>& blocks) {
  for (const Block* b : blocks) {
    for (const Thread* t : b->threads) {
      if (t->wait == Wait::kExited) continue;
      std::string what = "deadlock: the thread " + describe_wait(*t);
      if (t->wait == Wait::kShuffle) {
        const int first = t->linear - lane_of(*t);
        for (int j = 0; j < kWarpSize; ++j) {
          if (!(t->mask >> j & 1u)) continue;
          const Thread& partner = *b->threads[first + j];
          if (partner.wait != Wait::kShuffle) {
            what += "; lane " + std::to_string(j) + " of its mask " + describe_wait(partner);
            break;
          }
        }
      } else if (t->wait == Wait::kBarrier) {
        for (const Thread* other : b->threads) {
          if (other->wait != Wait::kBarrier && other->wait != Wait::kExited) {
            what += "; thread " + describe(other->index) + " " + describe_wait(*other);
            break;
          }
        }
      }
      fail_launch(launch, cudaErrorLaunchFailure, t, what);
      return;
    }
  }
}

// Runs the given blocks to completion (or to the first error), all at once.
void run_blocks(Worker& w, Launch& launch, const std::vector<Block*>& blocks) {
  const size_t needed = blocks.size() * static_cast<size_t>(launch.threads_per_block);
  while (w.pool.size() < needed) w.pool.push_back(std::make_unique<Thread>());
  size_t next = 0;
  const dim3 dims = launch.config.block;
  for (Block* b : blocks) {
    b->threads.clear();
    for (int i = 0; i < launch.threads_per_block; ++i) {
      Thread& t = *w.pool[next++];
      t.block = b;
      t.linear = i;
      t.index = uint3{static_cast<unsigned>(i) % dims.x,
                      static_cast<unsigned>(i) / dims.x % dims.y,
                      static_cast<unsigned>(i) / (dims.x * dims.y)};
      t.wait = Wait::kRunnable;
      t.counting = false;
      t.fiber.reset(&thread_entry, &t);
      b->threads.push_back(&t);
    }
  }
  for (;;) {
    bool live = false;
    for (Block* b : blocks) {
      for (Thread* t : b->threads) {
        if (t->wait != Wait::kRunnable) continue;
        run_fiber(w, *t);
        if (launch.status != cudaSuccess) return;
      }
    }
    bool progress = false;
    for (Block* b : blocks) {
      const int warps = (launch.threads_per_block + kWarpSize - 1) / kWarpSize;
      for (int warp = 0; warp < warps; ++warp) progress |= resolve_shuffles(launch, *b, warp);
      if (launch.status != cudaSuccess) return;
      progress |= resolve_barrier(launch, *b);
      if (launch.status != cudaSuccess) return;
      for (const Thread* t : b->threads) live |= t->wait != Wait::kExited;
    }
    if (launch.config.cooperative) progress |= resolve_grid_sync(launch);
    if (launch.status != cudaSuccess || !live) return;
    if (!progress) {
      report_deadlock(launch, blocks);
      return;
    }
  }
}

cudaError_t validate(const LaunchConfig& config, int threads, std::string& why) {
  const dim3& g = config.grid;
  if (threads < 1 || threads > kMaxBlockThreads || config.block.z > 64) {
    why = "block of " + std::to_string(threads) + " threads (expected 1 to 1024)";
    return cudaErrorInvalidConfiguration;
  }
  if (g.x < 1 || g.y < 1 || g.z < 1 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
    why = "grid " + describe(uint3{g.x, g.y, g.z});
    return cudaErrorInvalidConfiguration;
  }
  if (config.cooperative) {
    const uint64_t blocks = static_cast<uint64_t>(g.x) * g.y * g.z;
    const uint64_t resident = static_cast<uint64_t>(kMultiprocessors) *
                              static_cast<uint64_t>(kMaxThreadsPerMultiprocessor / threads);
    if (blocks > resident) {
      why = "cooperative grid of " + std::to_string(blocks) + " blocks, more than the " +
            std::to_string(resident) + " that fit on the device at once";
      return cudaErrorCooperativeLaunchTooLarge;
    }
  }
  return cudaSuccess;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// state.h
// ---------------------------------------------------------------------------------------

Worker& worker() {
  static thread_local Worker w;
  return w;
}

Thread& current_thread() { return *worker().current; }

void fail_here(cudaError_t status, const std::string& what) {
  Worker& w = worker();
  Thread& t = *w.current;
  fail_launch(*w.launch, status, &t, what);
  t.wait = Wait::kExited;
  set_counting(false, 0);
  t.counting = false;
  Fiber::switch_to(t.fiber, Fiber::of_this_thread());
  __builtin_unreachable();
}

// ---------------------------------------------------------------------------------------
// runtime.h
// ---------------------------------------------------------------------------------------

uint3 thread_index() { return current_thread().index; }
uint3 block_index() { return current_thread().block->index; }
dim3 block_dim() { return worker().launch->config.block; }
dim3 grid_dim() { return worker().launch->config.grid; }

void syncthreads(const char* file, int line) {
  Thread& t = current_thread();
  t.wait = Wait::kBarrier;
  t.file = file;
  t.line = line;
  switch_to_scheduler(t);
}

void grid_sync(const char* file, int line) {
  if (!worker().launch->config.cooperative) {
    fail_here(cudaErrorLaunchFailure, "grid.sync() (" + where(file, line) +
                                          ") in a kernel that was not launched cooperatively");
  }
  Thread& t = current_thread();
  t.wait = Wait::kGridSync;
  t.file = file;
  t.line = line;
  switch_to_scheduler(t);
}

uint64_t warp_shuffle(Shuffle kind, unsigned mask, uint64_t payload, int arg, int width,
                      const char* file, int line) {
  Thread& t = current_thread();
  t.wait = Wait::kShuffle;
  t.kind = kind;
  t.mask = mask;
  t.payload = payload;
  t.arg = arg;
  t.width = width;
  t.file = file;
  t.line = line;
  switch_to_scheduler(t);
  return t.result;
}

void check_aligned(const void* address, size_t alignment, bool store) {
  if (reinterpret_cast<uintptr_t>(address) % alignment == 0) return;
  std::ostringstream out;
  out << "misaligned " << alignment << "-byte vector " << (store ? "store to" : "load from")
      << " address " << address;
  fail_here(cudaErrorMisalignedAddress, out.str());
}

void enter_kernel_code() {
  Thread& t = current_thread();
  t.counting = true;
  set_counting(true, t.fiber.stack_low());
}

cudaError_t launch(const LaunchConfig& config, void (*thread_main)(void*), void* closure) {
  Worker& w = worker();
  Launch launch;
  launch.config = config;
  launch.thread_main = thread_main;
  launch.closure = closure;
  launch.threads_per_block = static_cast<int>(config.block.x * config.block.y * config.block.z);
  std::string why;
  launch.status = validate(config, launch.threads_per_block, why);
  if (launch.status != cudaSuccess) {
    launch.message = "kernel " + kernel_label(config.kernel) + ": invalid launch: " + why;
  } else {
    const dim3& g = config.grid;
    launch.blocks.resize(static_cast<size_t>(g.x) * g.y * g.z);
    for (size_t i = 0; i < launch.blocks.size(); ++i) {
      launch.blocks[i].index = uint3{static_cast<unsigned>(i % g.x),
                                     static_cast<unsigned>(i / g.x % g.y),
                                     static_cast<unsigned>(i / (static_cast<size_t>(g.x) * g.y))};
    }
    Launch* outer = w.launch;
    w.launch = &launch;
    if (config.cooperative) {
      std::vector<Block*> all;
      for (Block& b : launch.blocks) all.push_back(&b);
      run_blocks(w, launch, all);
    } else {
      for (Block& b : launch.blocks) {
        run_blocks(w, launch, {&b});
        if (launch.status != cudaSuccess) break;
      }
    }
    w.launch = outer;
    end_launch_traffic();
  }
  if (launch.status != cudaSuccess) {
    w.last_error = launch.status;
    w.last_message = launch.message;
  }
  return launch.status;
}

// ---------------------------------------------------------------------------------------
// host.h
// ---------------------------------------------------------------------------------------

const std::string& last_error_message() { return worker().last_message; }

}  // namespace emu
}  // namespace gfn_fast

cudaError_t cudaGetLastError() {
  gfn_fast::emu::Worker& w = gfn_fast::emu::worker();
  const cudaError_t error = w.last_error;
  w.last_error = cudaSuccess;
  return error;
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    case cudaErrorIllegalAddress:
      return "an illegal memory access was encountered";
    case cudaErrorMisalignedAddress:
      return "misaligned address";
    case cudaErrorLaunchFailure:
      return "unspecified launch failure";
    case cudaErrorCooperativeLaunchTooLarge:
      return "too many blocks in cooperative launch";
  }
  return "unknown error";
}
