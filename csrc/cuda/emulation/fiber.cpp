// Fiber stacks and context switches (fiber.h).
#include "cuda/emulation/fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__x86_64__)
// gfn_emu_switch(void** save_sp, void* load_sp): pushes the callee-saved registers and the
// MXCSR / x87 control words, stores the stack pointer, loads the other one and pops its state.
asm(R"(
  .text
  .globl gfn_emu_switch
  .type gfn_emu_switch, @function
gfn_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $16, %rsp
  stmxcsr 8(%rsp)
  fnstcw 12(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr 8(%rsp)
  fldcw 12(%rsp)
  addq $16, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size gfn_emu_switch, .-gfn_emu_switch

  .globl gfn_emu_trampoline
  .type gfn_emu_trampoline, @function
gfn_emu_trampoline:
  movq %r13, %rdi
  callq *%r12
  ud2
  .size gfn_emu_trampoline, .-gfn_emu_trampoline
)");
extern "C" void gfn_emu_switch(void** save_sp, void* load_sp);
extern "C" void gfn_emu_trampoline();
#endif

namespace gfn_fast {
namespace emu {

Fiber::Fiber() = default;

Fiber::~Fiber() {
  if (mapping_ != nullptr) munmap(mapping_, kStackBytes + static_cast<size_t>(getpagesize()));
}

void Fiber::reset(void (*entry)(void*), void* arg) {
  if (mapping_ == nullptr) {
    // A guard page below the stack turns an overflow into a fault instead of corruption.
    const size_t page = static_cast<size_t>(getpagesize());
    mapping_ = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping_ == MAP_FAILED) {
      mapping_ = nullptr;
      throw std::bad_alloc();
    }
    mprotect(mapping_, page, PROT_NONE);
    stack_ = static_cast<char*>(mapping_) + page;
  }
#if defined(__x86_64__)
  // From the top of the stack down: the trampoline as return address, in a slot at 8 mod 16
  // so that the trampoline's call sees the ABI's alignment; r15 r14 r13 r12 rbx rbp as the
  // switch pops them (r12 = entry, r13 = arg); the MXCSR and x87 control words.
  auto* top = reinterpret_cast<uint64_t*>(stack_high() & ~uintptr_t{15});
  uint64_t* ret = top - 3;
  ret[0] = reinterpret_cast<uint64_t>(&gfn_emu_trampoline);
  ret[1] = ret[2] = 0;
  uint64_t* regs = ret - 6;
  regs[0] = regs[1] = 0;                         // r15, r14
  regs[2] = reinterpret_cast<uint64_t>(arg);     // r13
  regs[3] = reinterpret_cast<uint64_t>(entry);   // r12
  regs[4] = regs[5] = 0;                         // rbx, rbp
  uint64_t* sp = regs - 2;
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  std::memcpy(reinterpret_cast<char*>(sp) + 8, &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(sp) + 12, &fpcw, 2);
  sp_ = sp;
#else
  getcontext(&context_);
  context_.uc_stack.ss_sp = stack_;
  context_.uc_stack.ss_size = kStackBytes;
  context_.uc_link = nullptr;
  // makecontext passes int arguments: the pointer travels in two halves.
  const auto bits = reinterpret_cast<uintptr_t>(arg);
  const auto entry_bits = reinterpret_cast<uintptr_t>(entry);
  makecontext(&context_,
              reinterpret_cast<void (*)()>(+[](unsigned e_hi, unsigned e_lo, unsigned hi,
                                                unsigned lo) {
                const auto f = reinterpret_cast<void (*)(void*)>(
                    (static_cast<uintptr_t>(e_hi) << 32) | e_lo);
                f(reinterpret_cast<void*>((static_cast<uintptr_t>(hi) << 32) | lo));
              }),
              4, static_cast<unsigned>(entry_bits >> 32), static_cast<unsigned>(entry_bits),
              static_cast<unsigned>(bits >> 32), static_cast<unsigned>(bits));
#endif
}

void Fiber::switch_to(Fiber& from, Fiber& to) {
#if defined(__x86_64__)
  gfn_emu_switch(&from.sp_, to.sp_);
#else
  swapcontext(&from.context_, &to.context_);
#endif
}

Fiber& Fiber::of_this_thread() {
  static thread_local Fiber self;
  return self;
}

}  // namespace emu
}  // namespace gfn_fast
