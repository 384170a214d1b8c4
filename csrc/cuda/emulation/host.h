// What the host side (the op binding) asks of the emulated CUDA runtime: the detail of the
// last launch error, and the global-memory traffic the kernels made.
#pragma once

#include <cstdint>
#include <string>

namespace gfn_fast {
namespace emu {

// Cumulative since the process started, on the calling thread (launches run there).
// bytes_read / bytes_written count every byte each thread's loads and stores request;
// sector_bytes_read / sector_bytes_written count the distinct 32-byte sectors a launch
// touches (times 32): the DRAM traffic of a GPU whose caches keep everything a launch reads
// (a warp's loads of one address are one transaction) and nothing between launches.
struct Traffic {
  uint64_t launches = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t sector_bytes_read = 0;
  uint64_t sector_bytes_written = 0;
};

Traffic traffic();

// What happened between two readings of traffic(), and running totals of such.
inline Traffic operator-(const Traffic& a, const Traffic& b) {
  return {a.launches - b.launches, a.bytes_read - b.bytes_read, a.bytes_written - b.bytes_written,
          a.sector_bytes_read - b.sector_bytes_read,
          a.sector_bytes_written - b.sector_bytes_written};
}

inline Traffic& operator+=(Traffic& a, const Traffic& b) {
  a.launches += b.launches;
  a.bytes_read += b.bytes_read;
  a.bytes_written += b.bytes_written;
  a.sector_bytes_read += b.sector_bytes_read;
  a.sector_bytes_written += b.sector_bytes_written;
  return a;
}

// "kernel K, block (x, y, z), thread (x, y, z): what went wrong" for the last failed launch
// on this thread (empty when none failed).
const std::string& last_error_message();

}  // namespace emu
}  // namespace gfn_fast
