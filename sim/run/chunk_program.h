// A model chunk as the cluster run replays it: its step graph's operators, simulated once on the
// device and merged into tasks per pass (forward, backward, weight gradient, optimizer) in issue
// order, with the collectives and host copies between them, and the chunk's memory figures.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "arch/collective/collective.h"
#include "arch/ops/simulate.h"
#include "sim/run/training_run.h"
#include "workloads/memory/host_traffic.h"
#include "workloads/memory/timeline.h"
#include "workloads/training/step_graph.h"

namespace memwall {
namespace cluster {

struct Task {
  // HostCopy: a copy to or from the host on its own stream per direction (activation offload).
  enum Kind { Compute, Comm, Join, HostCopy } kind = Compute;
  Time duration;               // Compute: merged operator time; HostCopy: the copy's
  bool to_host = false;        // HostCopy: device to host (else host to device)
  bool after_first = false;    // HostCopy: not on a step's first micro-batch
  double bytes = 0;            // HostCopy: device-memory bytes it reads or writes
  CommSpec comm;               // Comm
  std::vector<int> waits;      // async Comm tasks (indices) this task waits for
  std::string name;            // first node's name
  int ops = 0;                 // operators merged into a Compute task
  int kernels = 0;             // kernels they launch
  int host_kernels = 0;        // of those, the ones the host issues itself (the rest are
                               // launched by an earlier call: StepNode::launched_with_previous)
  bool host_free = false;      // Comm: launched by an earlier call, no host cost
  // Compute: one product over blocks that arrive one by one (StepNode::paced_by_inputs); with
  // `waits` in issue order, the work on block i + 1 of waits + 1 starts once waits[i] ends.
  bool paced = false;
  /// Compute: host work that runs beside the next step (StepNode::beside_next_step).
  bool beside_next_step = false;
  Time memory_bound;           // Compute: the part of `duration` in memory-bound operators
  Time host_bound;             // Compute: the part bound by the host tier (link, memory, CPU)
  // Compute: the part of the above that the first micro-batch of a step does not run (gradient
  // accumulation, StepNode::after_first_micro_batch).
  Time first_skip, first_skip_memory, first_skip_host;
  int first_skip_kernels = 0;
};

struct Program {
  std::vector<Task> tasks;
  Time compute;  // sum of compute
  std::array<Time, 4> by_class{};
  std::array<Time, 4> first_skip_by_class{};  // of by_class, not run on the first micro-batch
  double flops = 0;           // algorithmic FLOPs of its operators (one execution)
  double model_flops = 0;     // without recompute
};

struct ChunkModel {
  StepGraph graph;
  Program fwd, bwd, opt;
  Program wgt;                 // split-backward schedules: the weight-gradient half (else empty)
  double boundary_bytes = 0;
  ClassBytes state{};          // persistent bytes by class
  double saved = 0;            // activation bytes kept from forward to backward
  double w_saved = 0;          // of those, what the weight-gradient half still reads
  double checkpoint = 0;       // this chunk's share of a checkpoint on one rank
  double pass_peak = 0;        // peak non-persistent bytes during one micro-batch
  // Of those, by class: activations, and transient weights and gradients (ZeRO-3's gathered
  // layers, ZeRO-2's unsharded buffers, weight offload's shards in from the host), workspace.
  ClassBytes at_peak{};
  std::vector<NodeTiming> nodes;
  HostTraffic host_traffic;    // the device's own host-memory traffic (cache mode, host_resident)
  // Per step, over its compute operators: lookups and hits of the last shared cache level, and
  // device-memory bytes (the hardware line's L2 hit rate and HBM utilisation).
  CacheTally cache_hits;
  double memory_bytes = 0;
};

/// Simulates every operator of the chunk's graph on `sim` and fills its programs. With
/// `split_backward`, edges from the input-gradient half into the weight-gradient half are not
/// waits: the schedule runs W after its B on the same stream.
void build_programs(ChunkModel& c, OpSimulator& sim, int64_t micro_batches, bool split_backward);
/// The chunk's memory over one micro-batch: persistent state, saved activations, the pass's peak
/// and its breakdown, a checkpoint's share, and what a deferred weight gradient keeps.
void measure_memory(ChunkModel& c);

}  // namespace cluster
}  // namespace memwall
