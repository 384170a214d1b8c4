// The global-memory traffic of kernel code (traffic.cpp): what the -fsanitize=thread
// callbacks of the kernel objects count, for the host's traffic() (host.h).
#pragma once

#include <cstdint>

namespace gfn_fast {
namespace emu {

// Counting on (for the fiber about to run: accesses to its stack at stack_low do not count)
// or off. counting() is the current state, which a fiber keeps while it waits.
void set_counting(bool on, uintptr_t stack_low);
bool counting();
// Ends a launch: one more launch, and its distinct sectors join the totals.
void end_launch_traffic();

}  // namespace emu
}  // namespace gfn_fast
