// The host tier behind a device: the CPU's memory and the link that reaches it.
//
// Role: a second memory tier, larger and slower than the device's own, and the CPU that can
// work on it: DDR5 behind PCIe on a DGX, LPDDR5X behind NVLink-C2C on a GH200. A device's
// optional `host:` section describes the node's host as a whole (its memory capacity and
// bandwidth, its CPUs' vector rate) and how many devices share it, and the link one device
// reaches it through, with how many devices share that link's uplink (two GPUs behind one PCIe
// switch). Each device gets its share: all of a node's devices move optimizer state at once, so
// the share is what one of them sees.
//
// Contract: host_op_time() times a HostOp (arch/ops/op.h) on that share. A copy is a DMA by the
// device's copy engines (no compute units): the link's latency plus bytes over the slower of
// the link share and the host-memory share. A host kernel streams its bytes through host
// memory and its FLOPs through the CPU share, whichever takes longer; a round trip pipelines a
// copy in, a kernel and a copy out. There is no contention model beyond the shares. Whether the
// device waits for a host op (the optimizer's) or runs beside it (offload's copy streams) is the
// runner's business.
#pragma once

#include <algorithm>
#include <string>

#include "sim/config/config.h"
#include "sim/units/units.h"

namespace memwall {

struct HostOp;

struct HostSpec {
  std::string name;             ///< what the host is, for reports ("2x Xeon 8480C, DDR5-4800")
  Bytes capacity{0};            ///< host memory of the node
  Bandwidth memory_bandwidth;   ///< the node's host-memory peak
  double memory_efficiency = 1; ///< sustained / peak for streaming (STREAM-like)
  FlopRate cpu_rate;            ///< the node's CPUs' fp32 vector peak
  int shared_by = 1;            ///< devices sharing the host memory and CPUs
  std::string link;             ///< "PCIe Gen4 x16", "NVLink-C2C"
  Bandwidth link_bandwidth;     ///< one device's link, per direction
  double link_efficiency = 1;   ///< sustained DMA / link peak
  Time link_latency;            ///< one copy's fixed cost (DMA setup and the link)
  int link_shared_by = 1;       ///< devices sharing the link's uplink to the host
  /// Cache mode: the device's memory is a hardware-managed cache of host memory, not a tier of
  /// its own. Every tensor lives in host memory; device memory keeps the most recently used
  /// (Xeon Max's cache mode; a large cache in front of a larger, slower tier). Flat (false): two
  /// tiers, and what goes where is the workload's choice (offload, host_resident).
  bool cache_mode = false;
  /// Energy figures (arch/power): a bit across the link, a bit in host memory, a CPU FLOP.
  Energy link_energy_per_bit = Energy::pj(5);
  Energy memory_energy_per_bit = Energy::pj(15);
  Energy cpu_flop_energy = Energy::pj(50);
  /// A third tier behind the host: the node's NVMe drives (ZeRO-Infinity's offload target),
  /// which the CPUs' kernels stream state from and back to. 0 B: none.
  Bytes storage_capacity{0};
  Bandwidth storage_read_bandwidth, storage_write_bandwidth;  ///< the node's drives together
  Energy storage_energy_per_bit = Energy::pj(400);
  /// Devices of the node that use the host in this run (a one-GPU run has the host to itself);
  /// 0: all of shared_by. Set by the run (Device::use_host_with).
  int active = 0;

  int sharers() const { return active > 0 ? std::min(active, shared_by) : shared_by; }
  int link_sharers() const { return active > 0 ? std::min(active, link_shared_by) : link_shared_by; }
  /// This device's share of the host.
  Bytes device_capacity() const { return capacity / double(sharers()); }
  Bandwidth device_memory_bandwidth() const {
    return memory_bandwidth * (memory_efficiency / sharers());
  }
  FlopRate device_cpu_rate() const { return FlopRate(cpu_rate.per_s() / sharers()); }
  bool has_storage() const { return storage_capacity.count() > 0; }
  Bytes device_storage_capacity() const { return storage_capacity / double(sharers()); }
  Bandwidth device_storage_read() const { return storage_read_bandwidth * (1.0 / sharers()); }
  Bandwidth device_storage_write() const { return storage_write_bandwidth * (1.0 / sharers()); }
  /// Sustained copy rate between this device and the host, per direction.
  Bandwidth device_link_bandwidth() const {
    return link_bandwidth * (link_efficiency / link_sharers());
  }

  static HostSpec from_config(const Config& c);
};

/// Schema of a device's `host:` section.
const Schema& host_schema();

/// Time for the device's own loads from and stores to host memory, `read` and `write` bytes,
/// made by a kernel while it runs (host-resident tensors, or misses of a device memory in cache
/// mode): each direction over the link share, both through the host-memory share, whichever
/// takes longest. No fixed cost: a kernel keeps many requests in flight.
Time host_access_time(double read, double write, const HostSpec& host);
/// What bounds it: "host link" or "host memory".
const char* host_access_bound(double read, double write, const HostSpec& host);

/// Time of one host op on this device's share of `host`.
Time host_op_time(const HostOp& op, const HostSpec& host);
/// What bounds it: "host link" (copies), "host memory", "host cpu", or with drives "host nvme
/// read" or "host nvme write".
const char* host_op_bound(const HostOp& op, const HostSpec& host);

}  // namespace memwall
