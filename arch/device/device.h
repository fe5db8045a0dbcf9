// One accelerator (or CPU socket): compute units, a cache hierarchy, an on-chip network, a
// main memory tier and optionally the host tier behind it, built from a validated `device`
// section.
//
// Role: the hardware state that operators run on. It owns every resource server and residency
// tracker; the tile executor drives them. Contract: read() and write() move one block between a
// compute unit and wherever the block lives, charging every level it crosses, and return the
// absolute time the transfer is complete (latency included). reset() empties caches and queues so
// each operator starts from the same state, which makes operator timings reproducible and lets
// them be memoised. A Device is not thread-safe; one simulation uses it at a time.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arch/cache/i_cache.h"
#include "arch/compute/compute_unit.h"
#include "arch/host/host.h"
#include "arch/package/package.h"
#include "arch/power/power.h"
#include "arch/memory/i_memory.h"
#include "arch/noc/noc.h"
#include "sim/config/config.h"
#include "sim/resource/server.h"

namespace memwall {

/// Schema of a device YAML file (see docs/components.md).
const Schema& device_schema();

class Device {
 public:
  /// Builds a device from a validated section; throws ConfigError on inconsistent figures.
  explicit Device(const Config& cfg);

  const std::string& name() const { return name_; }
  const std::string& kind() const { return kind_; }
  const ComputeSpec& compute() const { return compute_; }
  Time launch_overhead() const { return launch_overhead_; }
  MemoryModel& memory() { return *memory_; }
  const MemoryModel& memory() const { return *memory_; }
  const std::vector<std::unique_ptr<CacheLevel>>& caches() const { return caches_; }
  const Server& noc() const { return noc_; }
  /// The die-to-die link (a server of infinite bandwidth on a one-die device).
  const Server& die_link() const { return die_link_; }
  /// The host tier behind the device, or nullptr where its file has no `host:` section.
  const HostSpec* host() const { return host_ ? &*host_ : nullptr; }
  /// Power limit and energy figures, or nullptr where its file has no `power:` section.
  const PowerSpec* power() const { return power_ ? &*power_ : nullptr; }
  /// Sets the clock matrix work runs at (arch/power's power limit derives it).
  void set_sustained_clock(Frequency f) { compute_.sustained_clock = f; }
  /// Sets the clock work without matrix products runs at (sim/run/stragglers.h slows it).
  void set_boost_clock(Frequency f) { compute_.boost_clock = f; }
  /// Area and cost figures, or nullptr where its file has no `package:` section.
  const PackageSpec* package() const { return package_ ? &*package_ : nullptr; }
  /// How many of the node's devices use the host in this run (each gets an equal share).
  void use_host_with(int devices) {
    if (host_) host_->active = devices;
  }
  /// Stable fingerprint of the resolved configuration, for memoisation keys.
  const std::string& fingerprint() const { return fingerprint_; }
  const YAML::Node& resolved_config() const { return resolved_; }

  /// Moves a block from wherever it lives to `unit`; returns when it has arrived.
  /// `fanout` > 1: the read is multicast to that many units, each charged its share of the
  /// shared levels' and memory's bandwidth.
  /// `through_private` false: the read skips the private levels (copies into the scratchpad).
  Time read(int unit, Time earliest, uint64_t key, Bytes bytes, int fanout = 1,
            bool through_private = true);
  /// Writes a block from `unit` into the first shared level (write-back; dirty victims go to
  /// memory), or straight to memory when there is no shared level. Returns when accepted.
  Time write(int unit, Time earliest, uint64_t key, Bytes bytes);
  /// Writes every dirty block back to memory (a kernel boundary); returns when done.
  Time write_back(Time earliest);
  /// Dirty bytes level `level` evicted for an access to `key`: written into the level below it,
  /// or to memory from the last level.
  void write_below(size_t level, int unit, Time earliest, uint64_t key, Bytes evicted);
  /// Bytes moved to and from memory since the last reset (fills, write-throughs, victims and
  /// write-backs).
  Bytes memory_traffic() const { return memory_traffic_; }
  /// Empties caches, queues and statistics; everything is free from `now`.
  void reset(Time now);

  /// Peak memory bandwidth achievable by streaming (peak x efficiency).
  Bandwidth sustained_memory_bandwidth() const {
    return memory_->peak_bandwidth() * memory_->efficiency();
  }

 private:
  std::string name_, kind_, fingerprint_;
  ComputeSpec compute_;
  Time launch_overhead_;
  std::vector<std::unique_ptr<CacheLevel>> caches_;  // ordered by level, closest first
  Server noc_;
  Time noc_latency_;
  Server die_link_;
  double far_fraction_ = 0;
  Time die_link_latency_;
  size_t first_shared_ = 0;  // index of the first shared level (== caches_.size() if none)
  Bytes memory_traffic_{0};
  Time to_memory(Time earliest, uint64_t key, Bytes bytes, bool write) {
    memory_traffic_ += bytes;
    return memory_->access(earliest, key, bytes, write);
  }
  std::unique_ptr<MemoryModel> memory_;
  std::optional<HostSpec> host_;
  std::optional<PowerSpec> power_;
  std::optional<PackageSpec> package_;
  YAML::Node resolved_;
};

/// Loads a device from a preset name or a YAML file path, with `key=value` overrides.
std::unique_ptr<Device> load_device(const std::string& name_or_file,
                                    const std::vector<std::string>& overrides = {});

}  // namespace memwall
