// How a training job is split over devices: the parallel degrees and the schedule.
//
// Plain data, read from the `training:` section (keys mirror the validation case columns: tp,
// pp, dp, vpp, cp, ep, sequence_parallel, zero_stage) or from `memwall run` flags. Megatron's
// rank order is assumed: tp varies fastest, then cp, then dp (ep subdivides dp), then pp, so a
// tensor-parallel group sits inside one node whenever tp <= gpus per node.
#pragma once

#include <cstdint>
#include <string>

namespace memwall {

enum class PipelineSchedule { GPipe, OneFOneB, Interleaved, ZeroBubbleH1, ZeroBubbleV, DualPipe };
const char* pipeline_schedule_name(PipelineSchedule s);

struct Parallelism {
  int tp = 1;   ///< tensor parallel (Megatron column/row-parallel GEMMs)
  int pp = 1;   ///< pipeline stages
  int dp = 1;   ///< data-parallel replicas (ZeRO shards over these)
  int vpp = 1;  ///< virtual stages (model chunks) per pipeline rank; > 1: interleaved 1F1B
  int cp = 1;   ///< context parallel (ring attention over sequence shards)
  int ep = 1;   ///< expert parallel (MoE experts spread over ep ranks of the dp group)
  /// Expert tensor parallel (Megatron-core's --expert-tensor-parallel-size, "MoE parallel
  /// folding"): the experts' weights are split over etp ranks instead of tp, and the expert
  /// grid (etp fastest, then ep, then expert data parallel) folds over the tp x cp x dp ranks
  /// of a stage. 0: tp. 1 or tp.
  int etp = 0;
  bool sequence_parallel = false;  ///< Megatron SP: norms/dropout sharded over tp
  /// Megatron's --tp-comm-overlap (Transformer Engine userbuffers; needs sequence parallelism):
  /// each layer's tensor-parallel all-gathers and reduce-scatters run in pieces beside pieces of
  /// the products that use them, instead of blocking the compute stream.
  bool tp_comm_overlap = false;
  int zero_stage = 0;  ///< 0 none, 1 optimizer states, 2 + gradients, 3 + weights (FSDP)
  PipelineSchedule schedule = PipelineSchedule::OneFOneB;  ///< Interleaved when vpp > 1
  /// The backward runs as two items, input gradient then weight gradient (zero-bubble schedules).
  bool split_backward() const {
    return schedule == PipelineSchedule::ZeroBubbleH1 || schedule == PipelineSchedule::ZeroBubbleV ||
           schedule == PipelineSchedule::DualPipe;
  }
  /// ZB-V's V shape: rank r holds chunks r and 2 pp - 1 - r, so the first rank holds both ends.
  bool v_shape() const { return schedule == PipelineSchedule::ZeroBubbleV; }
  /// DualPipe (DeepSeek-V3): two pipelines over the same ranks in opposite directions. The model
  /// is split into pp stages; micro-batches 0 .. m/2-1 enter at rank 0 (global chunks 0 .. pp-1,
  /// stage k on rank k), the others at rank pp-1 (global chunks pp .. 2 pp-1, stage k on rank
  /// pp-1-k). Each rank holds two stages' weights: its own for the first direction and its
  /// mirror's for the second.
  bool dual() const { return schedule == PipelineSchedule::DualPipe; }
  double dp_bucket_bytes = 25.0 * 1024 * 1024;  ///< gradient bucket (PyTorch DDP default 25 MiB)
  bool overlap_grad_reduce = true;  ///< DP gradient sync overlapped with backward
  /// Megatron's --overlap-param-gather (ZeRO 1-2): the updated weights' all-gathers run under
  /// the first forward of the next step, each layer waiting for its own, instead of after the
  /// optimizer.
  bool overlap_param_gather = false;
  /// Collectives in flight take their NCCL channels' compute units (one thread block per channel)
  /// from the compute stream, which runs at (units - channels) / units meanwhile.
  bool comm_uses_units = true;
  /// Megatron-core's combined 1F1B (--overlap-moe-expert-parallel-comm; DeepSeek-V3's DualPipe
  /// overlaps the same way): in the steady state a forward and a backward of different
  /// micro-batches run as one step, interleaved on the compute stream, so that either's blocking
  /// communication (the experts' all-to-alls, tensor-parallel collectives) runs while the other
  /// computes.
  bool combined_1f1b = false;
  /// Layers on the first / last pipeline stage (Megatron's --decoder-first/last-pipeline-num-
  /// layers), to offset the embedding and the LM head, split over the stage's vpp chunks; 0: an
  /// even split. ZB-V: first_stage_layers is the first rank's count (it holds both ends).
  int first_stage_layers = 0, last_stage_layers = 0;

  /// The experts' tensor-parallel degree: etp, or tp when unset.
  int expert_tp() const { return etp > 0 ? etp : tp; }
  /// Ranks that hold the same experts of a stage (expert data parallel): tp x cp x dp over
  /// etp x ep.
  int64_t expert_dp() const { return int64_t(tp) * cp * dp / (int64_t(expert_tp()) * ep); }
  /// Devices the job needs: tp x cp x dp x pp (ep divides dp, it adds none).
  int64_t devices() const { return int64_t(tp) * cp * dp * pp; }
  /// Pipeline model chunks in total: pp x vpp.
  int chunks() const { return pp * vpp; }
  /// The global model chunk (0 .. chunks()-1, in forward order) that rank `s` holds as its
  /// chunk `v`: v x pp + s (Megatron's interleaving), or in the V shape s, then 2 pp - 1 - s.
  /// DualPipe: chunk 0 is the direction that enters nearer to the rank (the first direction on
  /// ranks below pp/2), chunk 1 the other.
  int global_chunk(int v, int s) const {
    if (dual()) return (v == 0) == (2 * s < pp) ? s : 2 * pp - 1 - s;
    return v_shape() && v == 1 ? 2 * pp - 1 - s : v * pp + s;
  }
  /// The pipeline rank that holds global chunk `c`.
  int rank_of_chunk(int c) const {
    return (v_shape() || dual()) && c >= pp ? 2 * pp - 1 - c : c % pp;
  }
  /// The stage (the model's layer slice, 0 .. chunks()-1; DualPipe 0 .. pp-1) of global chunk `c`.
  int stage_of_chunk(int c) const { return dual() ? c % pp : c; }
  /// Whether global chunk `c` starts (runs the embedding) or ends (runs the loss) the pipeline
  /// its micro-batches go through.
  bool first_chunk(int c) const { return dual() ? c % pp == 0 : c == 0; }
  bool last_chunk(int c) const { return dual() ? c % pp == pp - 1 : c == chunks() - 1; }
  /// The chunk after `c` in the forward (`forward`) or backward direction, -1 past an end.
  int next_chunk(int c, bool forward) const {
    if (forward) return last_chunk(c) ? -1 : c + 1;
    return first_chunk(c) ? -1 : c - 1;
  }
  /// Tensor-parallel groups (consecutive blocks of tp ranks) that span more than one node of
  /// `gpus_per_node` devices: with tp <= gpus_per_node, those where gpus_per_node is not a
  /// multiple of tp (tp 16 over 72-GPU racks). Their collectives cross the scale-out network.
  int64_t tp_groups_across_nodes(int gpus_per_node) const;
};

/// A contiguous slice of the model that one pipeline rank runs as one model chunk: layers
/// [first_layer, last_layer), plus the embedding on the first chunk and the final norm, LM head
/// and loss on the last. The default is the whole model.
struct ModelChunk {
  int64_t first_layer = 0;
  int64_t last_layer = -1;  ///< exclusive; -1: the model's layer count
  bool embedding = true;
  bool head = true;
  /// The chunk at the other end of the model is on the same pipeline rank (ZB-V's V shape): a
  /// tied LM head multiplies the first chunk's embedding table, with no copy of its own and no
  /// sum of the two copies' gradients over the pipeline.
  bool ends_on_one_rank = false;
};

}  // namespace memwall
