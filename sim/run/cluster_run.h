// Run orchestration for a training job on many devices: pipeline ranks, streams and collectives.
//
// The job is split as Megatron splits it (tp fastest, then cp, dp, pp). Replicas that behave
// alike are simulated once: one rank per pipeline stage runs its schedule (workloads/parallel/
// schedule.h) as events, and every collective it issues is timed by the network model on the full
// topology, with all the concurrent groups that share links with it (arch/collective). So a
// 10,000-GPU job costs about what its pipeline depth costs.
//
// Each simulated rank has one compute stream and one communication stream per parallel group.
// Operators run on the compute stream in program order; a blocking collective (TP, SP, EP)
// holds the compute stream; a non-blocking one (DP gradient buckets, ZeRO-3 prefetch, ring-
// attention exchanges, pipeline sends) runs on its own stream from the moment the program issues
// it, and only the nodes with a DAG edge from it wait. A forward of a model chunk waits for the
// activation sent by the previous chunk's rank; a backward waits for the gradient sent back. The
// pipeline bubble, exposed communication and in-flight activations are what these events give.
#pragma once

#include <array>
#include <stdexcept>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "arch/device/device.h"
#include "arch/network/system.h"
#include "arch/ops/simulate.h"
#include "sim/run/goodput.h"
#include "sim/run/stragglers.h"
#include "sim/run/training_run.h"
#include "workloads/model/transformer.h"
#include "workloads/training/setup.h"

namespace memwall {

class TraceWriter;

constexpr int kParallelGroups = 6;  ///< indexed by ParallelGroup (tp cp dp ep pp edp)

/// Communication of one parallel group over the step, as the simulated ranks saw it.
struct GroupComm {
  Time total;     ///< summed duration of its collectives (per simulated rank, averaged)
  Time exposed;   ///< time the compute stream waited for them
  long count = 0; ///< collectives issued (all simulated ranks)
  double bytes = 0;
  std::map<std::string, long> algorithms;  ///< algorithm name -> times chosen
  Time overlapped() const { return total > exposed ? total - exposed : Time::zero(); }
};

/// One pipeline rank (standing for every tp/cp/dp replica of its stage).
struct StageResult {
  int stage = 0;
  std::vector<int> chunks;  ///< global model chunks it holds
  int64_t first_layer = 0, last_layer = 0;  ///< layers [first, last) of its first chunk
  std::vector<std::pair<int64_t, int64_t>> layers;  ///< [first, last) of each of its chunks
  /// Its layers, e.g. "0-1" or, interleaved, "0-1,32-33,64-65".
  std::string layer_ranges() const;
  Time finish;              ///< when its optimizer step ended
  Time compute_busy;        ///< operator time on the compute stream
  Time host_stall;          ///< compute stream idle, waiting for the host to issue operators
  /// Of compute_busy, operators bound by the host tier: host-resident state or a cache-mode
  /// device memory's misses over the link, the CPU's optimizer and its copies.
  Time host_tier;
  /// Compute stretched by overlapped collectives holding compute units (comm_uses_units).
  Time comm_interference;
  Time bubble;  ///< step time neither computing nor waiting on a collective (pipeline idle)
  std::array<Time, kParallelGroups> exposed{};  ///< compute waits per group
  int64_t max_in_flight = 0;  ///< micro-batches of activations held at the peak
  ClassBytes memory{};        ///< per-rank peak breakdown (TensorClass order)
  /// The rank's share of a checkpoint: its optimizer state and its share of the weights (one
  /// copy between the ranks holding each: dp x cp for dense weights, the expert-data-parallel
  /// group for experts, two DualPipe ranks for a stage).
  double checkpoint_bytes = 0;
  /// NCCL's buffers for the rank's communicators, bytes (in peak_memory, not in `memory`).
  double comm_buffers = 0;
  double peak_memory = 0;     ///< bytes
  double host_memory = 0;     ///< bytes in host memory (offloaded optimizer state, activations)
  /// Compute-stream time waiting for activations copied back from the host (activation offload).
  Time host_copy_wait;
  struct Span {
    std::string track, name;
    Time start, duration;
  };
  std::vector<Span> spans;  ///< for the trace (filled only when tracing)
  /// Memory over the step (bytes at a time), for the trace's counter track (only when tracing):
  /// state + kept activations of in-flight micro-batches + the running pass's working set.
  std::vector<std::pair<Time, double>> memory_samples;
  /// One of its ranks' step energy: its operators' dynamic energy and idle power over the step.
  EnergyBreakdown energy;
};

struct ClusterResult {
  std::string device, model, system;
  Fidelity fidelity = Fidelity::Tile;
  Parallelism parallel;
  int gpus = 1, gpus_per_node = 1;
  int64_t micro_batches = 1;  ///< per pipeline per step
  Time step_time;
  double tokens_per_step = 0;  ///< global
  double model_flops = 0;      ///< per step, whole job, without recomputation
  double hardware_flops = 0;   ///< per step, whole job, with recomputation
  double peak_flops = 0;       ///< per device, for the matmul type
  double peak_memory_bandwidth = 0;  ///< per device, B/s (datasheet)
  /// The mean rank's: hits over lookups of the last shared cache level (-1: no cache was
  /// simulated, at analytical fidelity), and device-memory bytes over the step at peak
  /// bandwidth.
  double l2_hit_rate = -1, memory_utilisation = 0;
  CacheTally cache_hits;  ///< the mean rank's shared cache levels; empty at analytical fidelity
  /// ZeRO-Offload's delayed update: the host's part of the optimizer (CPU Adam, weights back),
  /// which runs beside the next step; a step takes no less.
  Time delayed_update;
  std::array<Time, 4> time_by_class{};  ///< compute time by OpClass on stage 0, per step
  std::array<GroupComm, kParallelGroups> comm{};
  std::vector<StageResult> stages;
  std::map<std::string, double> link_utilisation;  ///< link class -> busy fraction of the step
  /// link class -> busy fraction of the step of its busiest link direction (a hot spot: an
  /// oversubscribed uplink, the NICs a pipeline's sends share)
  std::map<std::string, double> link_peak;
  Bytes capacity{0};
  HostMemory host;  ///< the largest rank's host bytes against the device's host share
  std::vector<NodeTiming> nodes;  ///< stage 0's operators, all its chunks (top-ops table)
  int distinct_ops = 0;
  /// One device's step energy, the mean over ranks (idle power over the step included),
  /// against its limit. Empty (tdp 0) without the device's `power:` section.
  PowerSummary power;
  /// Energy of the bytes the links carried per step (the whole network; not in `power`).
  Energy link_energy;
  /// The network parts the job occupies and their always-on draw (NICs, switches).
  NetworkParts network;
  /// The network's share of a step: its links' energy and its always-on draw over the step.
  Energy network_energy() const { return link_energy + network.power * step_time; }
  /// Energy per step of the whole job: every device and the network.
  Energy job_energy() const { return power.energy.with_host() * double(gpus) + network_energy(); }
  /// Average draw of the busiest rank (the pipeline stage that spends most).
  Power hottest_rank_power() const;
  /// Average draw of one device (its board) with its share of the links' energy.
  Power per_gpu_power() const {
    return step_time.sec() > 0 ? (power.energy.total() + link_energy / double(gpus)) / step_time
                               : Power(0);
  }
  long collectives = 0;  ///< collective requests timed
  long pipeline_transfers = 0;  ///< activation and gradient sends between pipeline ranks
  /// Combined 1F1B: steps that ran a forward and a backward together, and those that split
  /// because one pass's input was not sent yet (summed over the simulated pipeline ranks).
  long combined_steps = 0, split_combined_steps = 0;
  /// Progress kept on the system's reliability with asynchronous checkpoints (sim/run/goodput.h).
  Goodput goodput;
  /// The slowest device's clock, which every rank ran at (sim/run/stragglers.h), and the
  /// sustained clock matrix work ran at.
  Stragglers stragglers;
  Frequency sustained_clock;

  double tokens_per_s() const { return tokens_per_step / step_time.sec(); }
  double mfu() const { return model_flops / (step_time.sec() * peak_flops * gpus); }
  double hfu() const { return hardware_flops / (step_time.sec() * peak_flops * gpus); }
  double peak_memory() const;  ///< the largest rank's
  bool fits() const { return peak_memory() <= capacity.count() && host.fits(); }
  /// Mean over stages of the compute stream's pipeline-wait time, as a fraction of the step.
  double bubble_fraction() const;
  Time exposed_comm() const;
  /// Compute-stream time lost to collectives holding compute units, averaged over ranks.
  Time comm_interference() const;
  /// Compute-stream time waiting for the host to issue operators, averaged over ranks.
  Time host_stall() const;
  Time overlapped_comm() const;
};

/// A parallel layout that cannot run: `key` is the training key at fault (tp, pp, vpp, cp, ep).
struct LayoutError : std::invalid_argument {
  LayoutError(std::string k, const std::string& msg) : std::invalid_argument(k + ": " + msg), key(std::move(k)) {}
  std::string key;
};

/// Checks a layout against the model and the system: tp x pp x dp x cp equals the GPU count,
/// layers divide into pp x vpp chunks, tp fits the scale-up domain, ep divides dp, interleaving
/// has whole rounds of micro-batches. Throws LayoutError. (Heads, sequence and experts against
/// tp, cp and ep: check_parallel_layout, which the step graph runs.)
void check_layout(const TransformerModel& m, const TrainingSetup& t, const SystemSpec& sys,
                  int gpus);

/// Layer boundaries of the pp x vpp model chunks: chunk c holds [b[c], b[c+1]). Even, or with
/// the first/last stage's layers set (Parallelism::first_stage_layers, last_stage_layers).
std::vector<int64_t> chunk_boundaries(int64_t layers, const Parallelism& p);

/// Simulates one optimizer step of `model` trained with `setup` on `gpus` devices of `system`.
/// `ops` times operators on the per-GPU device model at its fidelity; sharing one across runs
/// (a sweep, a validation file) reuses its memo.
ClusterResult simulate_cluster(const TransformerModel& model, const TrainingSetup& setup,
                               OpSimulator& ops, const SystemSpec& system, int gpus,
                               bool keep_spans = false);

/// Writes a Perfetto trace: one process per simulated rank with compute, per-group
/// communication and memory tracks.
void write_cluster_trace(const ClusterResult& r, TraceWriter& trace);

}  // namespace memwall
