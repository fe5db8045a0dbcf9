// Pipeline schedules: the order in which one pipeline rank runs its forward and backward passes.
//
// A schedule is a list, per pipeline rank, of work items (micro-batch, model chunk, forward or
// backward). It says nothing about time: the cluster run executes the lists as events, and the
// bubble, the in-flight activations and the exposed pipeline communication are what the events
// produce. No bubble formula is used anywhere.
//
// - GPipe: every forward, then every backward (Huang et al. 2019).
// - 1F1B (PipeDream-Flush, Megatron's default): pp - rank - 1 warm-up forwards, then alternate
//   one forward and one backward, then drain the backwards (Narayanan et al. 2021, fig. 4 top).
// - Interleaved 1F1B: each rank holds vpp model chunks (chunk v of rank r is global chunk
//   v x pp + r); micro-batches advance through the chunks in groups of pp (Narayanan et al.
//   2021, fig. 4 bottom; Megatron-LM's forward_backward_pipelining_with_interleaving).
// - ZB-H1 (Qi et al. 2024, "Zero Bubble Pipeline Parallelism", fig. 3): 1F1B's order of
//   forwards and backwards, each backward split into B (input gradient, which the previous
//   stage waits for) and W (weight gradient, which nobody waits for). Rank r keeps up to r W
//   passes pending and runs them where 1F1B leaves it idle: at the end, after its last B. A
//   micro-batch holds its activations until its W, so at most pp are in flight on any rank,
//   1F1B's peak (rank 0's).
// - ZB-V (Qi et al. 2024, section 6): two model chunks per rank in a V (rank r holds chunks r
//   and 2 pp - 1 - r, so the forward turns on the last rank and both ends sit on the first),
//   backward split into B and W. The order is built by list scheduling, as the paper's
//   heuristic does on profiled pass times (PassTimes; one unit each by default): whenever a rank
//   is free it runs, of what is ready, a F (the later chunk first) while fewer than 2 pp chunk
//   activations are held (1F1B's peak: pp micro-batches of the whole stage), else a B (the
//   later chunk first), else the oldest pending W. With equal pass times a step takes 6 m + pp - 1 units for m micro-batches
//   where 1F1B's takes 6 m + 6 (pp - 1): a sixth of its bubble.
// - DualPipe (DeepSeek-AI 2024, DeepSeek-V3 report section 3.2.1; deepseek-ai/DualPipe): two
//   pipelines in opposite directions over the same ranks (Parallelism::dual), m/2 micro-batches
//   each; rank r and its mirror pp-1-r run the same order, in eight phases: forwards of the
//   near direction, then of both, backwards of the far direction with deferred weight
//   gradients, the main phase of overlapped pairs (a forward of one direction with a backward of
//   the other, as one step), and the drain, whose second half defers weight gradients too.
//   Needs pp even and m >= 2 pp, m even. Chunk 0 of an item is the rank's near direction.
#pragma once

#include <cstdint>
#include <vector>

#include "workloads/parallel/parallel.h"

namespace memwall {

struct PipelineItem {
  int64_t micro_batch = 0;
  int chunk = 0;  ///< model chunk on this rank, 0 .. vpp-1 (global chunk = chunk x pp + rank)
  bool forward = true;
  /// A backward's weight-gradient half (forward is false); only split-backward schedules have
  /// these, and their other backward items are then the input-gradient half alone.
  bool weight = false;
  /// DualPipe: this forward runs as one step with the next item, a backward of the other
  /// direction (each one's communication under the other's compute).
  bool overlap_next = false;
};

/// How long each global model chunk's forward, input-gradient and weight-gradient passes take
/// (any one unit), for the schedules built by list scheduling (ZB-V), as the zero-bubble paper
/// profiles them first. Empty (or not one entry per chunk): every pass takes one unit.
struct PassTimes {
  std::vector<double> f, b, w;
};

/// Items of pipeline rank `rank` (0 .. pp-1) for `micro_batches` micro-batches. Throws
/// std::invalid_argument for an interleaved schedule whose micro-batch count is not a multiple
/// of pp (Megatron's requirement).
std::vector<PipelineItem> pipeline_schedule(PipelineSchedule s, int pp, int vpp, int rank,
                                            int64_t micro_batches, const PassTimes& times = {});
/// Every rank's items, 0 .. pp-1 (a list-scheduled order is built once for all ranks).
std::vector<std::vector<PipelineItem>> pipeline_schedules(PipelineSchedule s, int pp, int vpp,
                                                          int64_t micro_batches,
                                                          const PassTimes& times = {});

/// The most forward passes whose backward has not run yet (with a split backward: whose weight
/// gradient has not run yet), over the rank's item list: the number of micro-batches of
/// activations the rank holds at its peak (per chunk summed).
int64_t max_in_flight(const std::vector<PipelineItem>& items);

}  // namespace memwall
