// Fibers for the emulated CUDA threads: a stack and a saved context each, switched
// cooperatively. x86-64 uses a few instructions of its own (callee-saved registers, the SSE
// and x87 control words); other architectures use ucontext, which is slower but portable.
#pragma once

#include <cstddef>
#include <cstdint>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace gfn_fast {
namespace emu {

class Fiber {
 public:
  static constexpr size_t kStackBytes = 64 * 1024;

  Fiber();
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // Prepares the fiber to run entry(arg) when switched to; entry must never return (it
  // switches away for the last time instead).
  void reset(void (*entry)(void*), void* arg);
  // Saves the running context into `from` and continues `to`.
  static void switch_to(Fiber& from, Fiber& to);
  // A fiber standing for the OS thread's own stack (the scheduler); it needs no reset.
  static Fiber& of_this_thread();

  uintptr_t stack_low() const { return reinterpret_cast<uintptr_t>(stack_); }
  uintptr_t stack_high() const { return reinterpret_cast<uintptr_t>(stack_) + kStackBytes; }

 private:
  void* mapping_ = nullptr;  // guard page + stack
  void* stack_ = nullptr;
#if defined(__x86_64__)
  void* sp_ = nullptr;
#else
  ucontext_t context_;
#endif
};

}  // namespace emu
}  // namespace gfn_fast
