// A device's main memory tier (HBM, or DDR/LPDDR on a CPU).
//
// Role: serve the bytes that miss every cache. Contract: access() is called with an absolute time
// at which the request may start, an address key (any stable 64-bit hash of what is accessed; it
// picks the channels), a size and a direction, and returns the absolute time at which the data
// has arrived (read) or been accepted (write), including the tier's latency. Bandwidth is
// modelled per channel with busy-until servers, so concurrent requesters queue. The achievable
// efficiency (refresh, row-buffer misses, read/write turnaround) derates each channel's rate.
#pragma once

#include <cstdint>
#include <string>

#include "sim/units/units.h"

namespace memwall {

class MemoryModel {
 public:
  virtual ~MemoryModel() = default;

  virtual Time access(Time earliest, uint64_t key, Bytes bytes, bool write) = 0;
  /// Bank-level timing (the `cycle` fidelity): each channel's banks open and close rows, with
  /// activation, precharge, four-activate window, refresh and bus turnaround, at the full pin
  /// rate; the losses that `efficiency()` folds into one factor emerge instead. Off: channels
  /// at peak x efficiency. A tier without a bank model ignores it.
  virtual void set_bank_timing(bool on) { (void)on; }
  /// Forgets queue state and statistics; free from `now`.
  virtual void reset(Time now) = 0;

  virtual Bytes capacity() const = 0;
  /// Pin bandwidth as the datasheet states it.
  virtual Bandwidth peak_bandwidth() const = 0;
  /// Sustainable fraction of peak for streaming traffic.
  virtual double efficiency() const = 0;
  virtual Time latency() const = 0;
  virtual std::string describe() const = 0;

  /// Energy of one bit read or written (the DRAM core's activation and column access and the
  /// I/O to the processor), for arch/power.
  Energy energy_per_bit() const { return energy_per_bit_; }

  Bytes bytes_read() const { return read_; }
  Bytes bytes_written() const { return written_; }

 protected:
  Bytes read_{0}, written_{0};
  Energy energy_per_bit_{0};
};

}  // namespace memwall
