// Run orchestration: replays a training step's operator graph on a device.
//
// This is where the two halves meet: workloads/ builds the StepGraph from a model and a training
// setup (knowing no hardware), arch/ times each operator on a device (knowing no transformer).
// The step runs on one stream in the generator's order: each micro-batch's forward, backward and
// recompute nodes, `accumulation_steps` times, then the optimizer. Identical operators (every
// layer's QKV GEMM, say) are simulated once per run through OpSimulator's memoisation. Memory
// over the step comes from the same graph and schedule (workloads/memory), so time and memory
// describe one run.
#pragma once

#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/ops/simulate.h"
#include "workloads/memory/host_traffic.h"
#include "workloads/memory/timeline.h"
#include "workloads/training/step_graph.h"

namespace memwall {

class TraceWriter;

/// What an operator node is, for the time split.
enum class OpClass { Matrix, Attention, MemoryBound, Optimizer };
const char* op_class_name(OpClass c);
/// The class an operator node's time is reported under: the optimizer's pass, else by its kind.
OpClass classify(const StepNode& n);

/// Host memory a rank keeps (offloaded optimizer state and its gradient copies) against the
/// device's share of its host (HostSpec::device_capacity).
struct HostMemory {
  double bytes = 0;   ///< the largest rank's
  Bytes capacity{0};  ///< 0: the device has no host tier
  /// The device's own loads from and stores to host memory per step (host-resident state, or
  /// the misses of a device memory in cache mode), the largest rank's: workloads/memory/
  /// host_traffic.h.
  double read = 0, write = 0;
  /// Cache mode: device memory is a cache of host memory, the step's footprint lives in host
  /// memory (the run's `capacity` is the host's share), and this much of it is the cache.
  bool cache = false;
  Bytes cache_capacity{0};
  double hit_rate = 1;  ///< of the bytes the step touches, the share found in device memory
  std::string link;                            ///< the link to the host, for reports
  Bandwidth link_bandwidth, memory_bandwidth;  ///< this device's shares, sustained
  /// On the host's drives (optimizer state offloaded to NVMe), the largest rank's, against the
  /// device's share of them.
  double storage = 0;
  Bytes storage_capacity{0};
  bool fits() const { return bytes <= capacity.count() && storage <= storage_capacity.count(); }
};

/// A device's share of its host (none: all zero), before any run's figures.
HostMemory host_memory_of(const Device& d);

/// One graph node with its simulated figures (for one execution).
struct NodeTiming {
  std::string name;
  Pass pass;
  int layer;
  OpClass cls;
  double flops = 0;
  Bytes bytes{0};       ///< memory bytes moved (read + written)
  Time time;            ///< one execution
  std::string bound;
  int executions = 1;   ///< per optimizer step (micro-batch nodes run accumulation_steps times,
                        ///< gradient accumulation one fewer)
  int kernels = 1;      ///< kernels one execution launches, each issued by the host
  /// Runs on a copy stream beside the compute (activation offload's host copies): not part of
  /// the compute stream's time, so not in the top-operators share of the step.
  bool beside_compute = false;
  /// Dynamic energy of one execution (arch/power; zero without the device's `power:` section).
  EnergyBreakdown energy = {};
};

/// Kernels the host issues per optimizer step for these operators (each execution counted).
double kernels_per_step(const std::vector<NodeTiming>& nodes);

struct TrainingResult {
  std::string device, model;
  Fidelity fidelity = Fidelity::Tile;
  Time step_time;
  double tokens_per_step = 0;
  double model_flops = 0;     ///< per step, without recomputation (MFU numerator)
  double hardware_flops = 0;  ///< per step, with recomputation, without the optimizer (HFU numerator)
  double peak_flops = 0;      ///< device peak for the matmul type, datasheet convention
  double peak_memory_bandwidth = 0;  ///< B/s, datasheet
  std::array<Time, 4> time_by_class{};  ///< indexed by OpClass
  Time compute_bound_time, memory_bound_time, cache_bound_time, latency_bound_time;
  Time launch_time;  ///< kernel launch gaps inside the step (part of the op times above)
  Time host_stall;   ///< device idle waiting for the host to issue operators
  Time host_work;    ///< device waiting on host copies and the host CPU's optimizer (offload),
                     ///< and operators bound by their own host-memory traffic
  HostMemory host;
  MemoryTimeline memory;
  Bytes capacity{0};
  Time peak_memory_time;      ///< offset into the step of the memory peak (first micro-batch)
  std::vector<NodeTiming> nodes;  ///< in execution order (one micro-batch, then the optimizer)
  double l2_hit_rate = 0;         ///< of the last shared cache level, weighted by lookups
  CacheTally cache_hits;          ///< every shared level's hits and lookups
  double memory_utilisation = 0;  ///< memory bytes / (step time x peak bandwidth)
  int distinct_ops = 0;           ///< operators actually simulated (after memoisation)
  /// The step's energy (idle power over the step included) against the board's limit; empty
  /// (tdp 0) without the device's `power:` section.
  PowerSummary power;

  double tokens_per_s() const { return tokens_per_step / step_time.sec(); }
  double mfu() const { return model_flops / (step_time.sec() * peak_flops); }
  double hfu() const { return hardware_flops / (step_time.sec() * peak_flops); }
  bool fits() const { return memory.peak_bytes <= capacity.count() && host.fits(); }
};

/// The device's own host-memory traffic in `g`: the misses of its memory in cache mode, or the
/// accesses to host-resident state; none otherwise.
HostTraffic device_host_traffic(const StepGraph& g, const Device& device);
/// Records a rank's traffic in `h` (the larger of what it holds and `t`'s).
void note_host_traffic(HostMemory& h, const HostTraffic& t);

/// Replays `graph` on `device`. Throws std::runtime_error if the device cannot run an operator.
TrainingResult simulate_training(const StepGraph& graph, Device& device, Fidelity fidelity,
                                 TraceWriter* trace = nullptr);

}  // namespace memwall
