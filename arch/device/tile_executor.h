// Runs a TileProgram on a Device as a SystemC discrete-event simulation.
//
// Role: the `tile` fidelity. Each resident work-group slot (units x occupancy) is a spawned
// SC_METHOD that advances with next_trigger: one activation per phase, per wait for data, and per
// group switch. No clock is ever ticked; all timing comes from the device's busy-until servers
// (cache ports, network, memory channels) and from per-unit pipe servers created here. Work
// groups go to slots in launch order as slots free up, so wave quantisation and tails emerge.
//
// Contract: execute() starts at the current SystemC time, resets the device, launches the kernel
// after the device's launch overhead, runs sc_start() until the kernel has finished, and returns
// the measured figures. It never hangs: a slot that stops making progress is reported by a
// watchdog (std::runtime_error naming the unit, slot and group).
#pragma once

#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/mapping/tile_program.h"

namespace memwall {

class TraceWriter;

struct KernelStats {
  Time start, end;       ///< absolute; start is launch, after the launch overhead
  Time duration;         ///< end - (start - launch overhead): what the caller waits
  long events = 0;       ///< process activations
  int occupancy = 0;     ///< resident groups per unit
  long groups = 0;
  std::array<Time, kPipeCount> pipe_busy{};  ///< summed over units
};

class TileExecutor {
 public:
  explicit TileExecutor(Device& device, TraceWriter* trace = nullptr)
      : device_(device), trace_(trace) {}
  KernelStats execute(const TileProgram& program);

 private:
  Device& device_;
  TraceWriter* trace_;
};

/// Resident groups per unit for `f` on `c`; 0 when one group does not fit.
int occupancy(const ComputeSpec& c, const GroupFootprint& f);

}  // namespace memwall
