// Simulating operators on a device at a chosen fidelity, with memoisation.
//
// Role: the single entry point that run, validate and (later) the training-step replay use to
// time an operator. `analytical` is a roofline from the same device description (peak matrix or
// vector rate at the sustained clock, memory at peak x efficiency, plus launch overhead):
// microseconds of wall time per op, for wide sweeps. `tile` maps the op to kernels and runs them
// on the discrete-event engine. An op's figures depend only on (op signature, device, fidelity),
// so identical ops are simulated once per OpSimulator and reused.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/ops/op.h"
#include "sim/stats/stats.h"

namespace memwall {

class TraceWriter;

/// analytical: a roofline. tile: the discrete-event run of tiles through caches and channels.
/// cycle: the same, with the memory tier at bank level (rows, activations, refresh, bus
/// turnaround), for small kernels and for checking the tile level's memory efficiency.
enum class Fidelity { Analytical, Tile, Cycle };
const char* fidelity_name(Fidelity f);
Fidelity parse_fidelity(const std::string& s);  // throws std::invalid_argument

struct LevelResult {
  std::string name;
  double hit_rate = 0;  ///< block hit rate of lookups at this level
  double lookups = 0;   ///< block lookups; 0 when every access bypassed the level
  Bytes bytes{0};       ///< bytes its ports moved
  bool shared = false;  ///< past the units' own levels (shared by a group or by all)
};

/// Hits and lookups of the shared cache levels summed over many ops (a training step's), in
/// the device's order: an H100's L2, an MI300X's L2 per XCD and then its Infinity Cache.
struct CacheTally {
  std::vector<std::string> names;
  std::vector<double> hits, lookups;
  /// Adds one op's levels, `runs` times.
  void add(const std::vector<LevelResult>& levels, double runs);
  void add(const CacheTally& other);
  bool empty() const { return names.empty(); }
  double rate(size_t i) const { return lookups[i] > 0 ? hits[i] / lookups[i] : 0; }
  /// The last shared level's hit rate (the one in front of memory); -1 without caches.
  double last_rate() const { return empty() ? -1 : rate(names.size() - 1); }
  /// "L2 hit 41%, infinity_cache hit 98%".
  std::string summary() const;
};

struct OpResult {
  std::string name, kind, signature, mapping;
  Fidelity fidelity = Fidelity::Tile;
  Time time;                 ///< wall time on the device, launch overheads included
  double flops = 0;          ///< algorithmic FLOPs
  Bytes min_bytes{0};        ///< compulsory traffic
  Bytes memory_read{0}, memory_written{0};
  std::vector<LevelResult> levels;
  double memory_utilisation = 0;  ///< memory bytes / (time x peak bandwidth)
  double matrix_utilisation = 0;  ///< matrix-pipe busy time / (time x units)
  double vector_utilisation = 0;  ///< vector, SFU and issue pipes, the busiest of them
  double cache_utilisation = 0;   ///< busiest shared cache level: port bytes / (time x bandwidth)
  std::string bound;              ///< "compute", "memory", "cache" or "latency"
  DType dtype_for_peak = DType::BF16;  ///< the type whose peak the op is compared against
  int kernels = 0;
  long events = 0;
  bool memoised = false;
  StatGroup stats;  ///< the device's statistics tree for this op (tile fidelity)
  /// Dynamic energy of one execution (arch/power; zero without the device's `power:` section).
  /// The idle power over `time` is not in it: whoever owns the timeline charges that.
  EnergyBreakdown energy;

  FlopRate achieved() const { return FlopRate(flops / time.sec()); }
  Bandwidth memory_bandwidth() const {
    return (memory_read + memory_written) / time;
  }
};

class OpSimulator {
 public:
  OpSimulator(Device& device, Fidelity fidelity, TraceWriter* trace = nullptr)
      : device_(device), fidelity_(fidelity), trace_(trace) {}

  /// Times `op`; identical ops are simulated once. Throws std::runtime_error when the device
  /// cannot run the op (a data type it lacks, a tile that does not fit).
  OpResult run(const Op& op);
  long cache_hits() const { return hits_; }
  Device& device() const { return device_; }
  Fidelity fidelity() const { return fidelity_; }
  /// Distinct operators simulated so far.
  std::size_t memo_size() const { return memo_.size(); }

 private:
  OpResult simulate_tile(const Op& op);
  OpResult simulate_analytical(const Op& op) const;
  OpResult simulate_host(const Op& op) const;

  Device& device_;
  Fidelity fidelity_;
  TraceWriter* trace_;
  std::map<std::string, OpResult> memo_;
  long hits_ = 0;
};

/// The roofline lower bound at datasheet peaks (boost clock, peak bandwidth, no latency): no
/// simulated time may be shorter.
Time roofline_bound(const Op& op, const Device& device);

/// `o` with `read` and `write` bytes of the device's own traffic to host memory made while it
/// runs (host-resident tensors, a cache-mode device memory's misses): it takes no less than
/// host_access_time over `device`'s host tier, is bound by it when that is longer, and (where
/// the device counts energy) pays the host link and host memory for those bytes.
OpResult with_host_access(OpResult o, double read, double write, const Device& device);

}  // namespace memwall
