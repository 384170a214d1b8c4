// The emulated runtime's own state, shared by its parts (runtime.cpp: launches, scheduling
// and synchronisation; shared_memory.cpp; traffic.cpp): the CUDA threads (fibers), blocks,
// the launch running, and the worker of each OS thread. Not for kernel code.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "cuda/emulation/fiber.h"
#include "cuda/emulation/runtime.h"

namespace gfn_fast {
namespace emu {

enum class Wait { kRunnable, kBarrier, kGridSync, kShuffle, kExited };

struct Block;

struct Thread {
  Fiber fiber;
  Block* block = nullptr;
  uint3 index{};
  int linear = 0;
  Wait wait = Wait::kRunnable;
  bool counting = false;
  // Where the thread waits.
  const char* file = "";
  int line = 0;
  // Its pending shuffle.
  Shuffle kind = Shuffle::kIdx;
  unsigned mask = 0;
  uint64_t payload = 0;
  uint64_t result = 0;
  int arg = 0;
  int width = kWarpSize;
};

constexpr int kNoThread = -1;
constexpr int kSeveralThreads = -2;

// Per element of a shared array: who wrote and read it since the block's last barrier.
struct Shadow {
  int writer = kNoThread;
  int reader = kNoThread;
  int64_t write_epoch = -1;
  int64_t read_epoch = -1;
  bool written = false;
};

struct SharedSlot {
  const void* declaration = nullptr;
  size_t element_size = 0;
  int64_t count = 0;
  std::vector<unsigned char> data;
  std::vector<Shadow> shadow;
};

struct Block {
  uint3 index{};
  int64_t epoch = 0;  // barriers completed so far
  std::vector<Thread*> threads;
  std::deque<SharedSlot> slots;  // deque: pointers stay valid as slots are added
};

struct Launch {
  LaunchConfig config;
  void (*thread_main)(void*) = nullptr;
  void* closure = nullptr;
  int threads_per_block = 0;
  std::vector<Block> blocks;
  cudaError_t status = cudaSuccess;
  std::string message;
};

// The state of the OS thread that runs launches.
struct Worker {
  std::vector<std::unique_ptr<Thread>> pool;  // fibers and their stacks, reused
  Launch* launch = nullptr;
  Thread* current = nullptr;
  cudaError_t last_error = cudaSuccess;
  std::string last_message;
};

// The state of the calling OS thread.
Worker& worker();
// The CUDA thread whose fiber is running.
Thread& current_thread();
// Records an error of the current thread's launch and stops its fiber for good (called from
// kernel code).
[[noreturn]] void fail_here(cudaError_t status, const std::string& what);
// "(x, y, z)".
std::string describe(const uint3& v);

}  // namespace emu
}  // namespace gfn_fast
