// Global-memory traffic (traffic.h, host.h): the -fsanitize=thread callbacks of the kernel
// objects count every load and store of kernel code outside the running fiber's stack, as
// requested bytes and as distinct 32-byte sectors per launch.
#include "cuda/emulation/traffic.h"

#include <array>
#include <unordered_map>

#include "cuda/emulation/fiber.h"
#include "cuda/emulation/host.h"

namespace gfn_fast {
namespace emu {
namespace {

// The distinct 32-byte sectors one launch touches: a bitmap per 4 KiB page.
class SectorSet {
 public:
  void touch(uintptr_t address, uint64_t bytes) {
    const uintptr_t last = (address + bytes - 1) >> kSectorBits;
    for (uintptr_t sector = address >> kSectorBits; sector <= last; ++sector) {
      const uintptr_t page = sector >> kSectorsPerPageBits;
      if (page != cached_page_) {
        cached_page_ = page;
        cached_ = &pages_[page];
      }
      const uintptr_t bit = sector & ((uintptr_t{1} << kSectorsPerPageBits) - 1);
      uint64_t& word = (*cached_)[bit / 64];
      const uint64_t mask = uint64_t{1} << (bit % 64);
      if (!(word & mask)) {
        word |= mask;
        ++count_;
      }
    }
  }
  // The sectors' bytes since the last take(); forgets them.
  uint64_t take() {
    const uint64_t bytes = count_ << kSectorBits;
    pages_.clear();
    cached_page_ = ~uintptr_t{0};
    count_ = 0;
    return bytes;
  }

 private:
  static constexpr int kSectorBits = 5;           // 32-byte sectors
  static constexpr int kSectorsPerPageBits = 7;   // 128 per 4 KiB page
  std::unordered_map<uintptr_t, std::array<uint64_t, 2>> pages_;
  uintptr_t cached_page_ = ~uintptr_t{0};
  std::array<uint64_t, 2>* cached_ = nullptr;
  uint64_t count_ = 0;
};

// Read by the instrumentation callbacks on every kernel memory access: plain thread-locals.
thread_local bool t_counting = false;
thread_local uintptr_t t_stack_low = 0;
thread_local uint64_t t_launches = 0;
thread_local uint64_t t_bytes_read = 0;
thread_local uint64_t t_bytes_written = 0;
thread_local uint64_t t_sector_bytes_read = 0;
thread_local uint64_t t_sector_bytes_written = 0;

SectorSet& read_sectors() {
  static thread_local SectorSet sectors;
  return sectors;
}

SectorSet& written_sectors() {
  static thread_local SectorSet sectors;
  return sectors;
}

void count(const void* address, uint64_t bytes, bool write) {
  if (!t_counting) return;
  const uintptr_t a = reinterpret_cast<uintptr_t>(address);
  if (a - t_stack_low < Fiber::kStackBytes) return;
  (write ? t_bytes_written : t_bytes_read) += bytes;
  (write ? written_sectors() : read_sectors()).touch(a, bytes);
}

}  // namespace

void set_counting(bool on, uintptr_t stack_low) {
  t_counting = on;
  t_stack_low = stack_low;
}

bool counting() { return t_counting; }

void end_launch_traffic() {
  ++t_launches;
  t_sector_bytes_read += read_sectors().take();
  t_sector_bytes_written += written_sectors().take();
}

Traffic traffic() {
  Traffic t;
  t.launches = t_launches;
  t.bytes_read = t_bytes_read;
  t.bytes_written = t_bytes_written;
  t.sector_bytes_read = t_sector_bytes_read;
  t.sector_bytes_written = t_sector_bytes_written;
  return t;
}

}  // namespace emu
}  // namespace gfn_fast

// The callbacks (no sanitizer runtime is linked; these are all the kernel objects call).
extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_read(void**) {}
void __tsan_vptr_update(void**, void*) {}
#define GFN_EMU_ACCESS(bytes)                                                        \
  void __tsan_read##bytes(void* a) { gfn_fast::emu::count(a, bytes, false); }                       \
  void __tsan_write##bytes(void* a) { gfn_fast::emu::count(a, bytes, true); }                       \
  void __tsan_unaligned_read##bytes(void* a) { gfn_fast::emu::count(a, bytes, false); }             \
  void __tsan_unaligned_write##bytes(void* a) { gfn_fast::emu::count(a, bytes, true); }
GFN_EMU_ACCESS(1)
GFN_EMU_ACCESS(2)
GFN_EMU_ACCESS(4)
GFN_EMU_ACCESS(8)
GFN_EMU_ACCESS(16)
#undef GFN_EMU_ACCESS
void __tsan_read_range(void* a, unsigned long size) { gfn_fast::emu::count(a, size, false); }
void __tsan_write_range(void* a, unsigned long size) { gfn_fast::emu::count(a, size, true); }
}
